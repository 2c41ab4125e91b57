/* gguf_moe.h - mixture-of-experts models in llama.cpp's GGUF terms, shared by convert (which
 * stacks the experts), quantize --imatrix / --sensitivity imatrix and imatrix (which name
 * their statistics so): llama.cpp's tensor name of every Hugging Face weight, with the
 * expert a per-expert weight is, and the architecture convert_hf_to_gguf.py writes.
 *  - mixtral: general.architecture "llama" (Q/K permuted); block_sparse_moe.gate (or
 *    mlp.gate) -> blk.N.ffn_gate_inp; experts.E.w1 / w3 / w2 (or mlp.experts.E.gate_proj /
 *    up_proj / down_proj) -> expert E of blk.N.ffn_gate_exps / ffn_up_exps / ffn_down_exps;
 *    transformers 5's fused mlp.experts.gate_up_proj [E, 2F, H] -> ffn_gate_exps (rows 0..F-1
 *    of each expert) and ffn_up_exps (rows F..2F-1), mlp.experts.down_proj -> ffn_down_exps.
 *  - qwen2_moe: "qwen2moe", the same expert names, and mlp.shared_expert.* -> ffn_*_shexp,
 *    mlp.shared_expert_gate -> ffn_gate_inp_shexp.
 *  - qwen3_moe: names only (imatrix, quantize); convert does not write it yet.
 * Must not: read tensors or files.
 */
#ifndef MK_CLI_GGUF_MOE_H
#define MK_CLI_GGUF_MOE_H

#include "../formats/gguf.h"
#include "../formats/gguf_write.h"
#include "../formats/imatrix.h"
#include "../model/config.h"
#include "../model/gguf_names.h"

/* What one Hugging Face tensor becomes in GGUF. */
typedef struct mk_cli_gguf_part {
    char name[MK_GGUF_MAX_NAME]; /* "blk.0.ffn_up_exps.weight" */
    uint64_t nmat;               /* matrices (experts) of the GGUF tensor; 1 unless ffn_*_exps */
    long expert;                 /* the expert the source tensor holds; -1: all of them (fused), or not an expert */
    uint64_t rows, cols;         /* of one matrix */
    uint64_t estride, row0;      /* fused: values between experts in the source; the first row it takes in each */
} mk_cli_gguf_part;

/* The GGUF architecture whose dense tensor names (model/gguf_names.h) a model_type uses:
 * the dense families', mixtral's "llama", qwen2_moe's "qwen2", qwen3_moe's "qwen3"; NULL. */
const mk_gguf_arch *mk_cli_gguf_names_for(const char *model_type);
/* The architecture convert writes for model_type (general.architecture, Q/K permutation):
 * the dense ones, mixtral as "llama", qwen2_moe as "qwen2moe"; NULL. */
const mk_gguf_arch *mk_cli_gguf_write_arch(const char *model_type);
/* Source tensor t of a model (config cfg, dense names of a) in GGUF: out[0..*n) (two for a
 * fused gate_up; *n 0 when t is not a weight llama.cpp names). A fused tensor must be
 * [cfg->n_experts, ...] and an expert index below cfg->n_experts, else MK_ERR_FORMAT. */
mk_status mk_cli_gguf_parts(const mk_model_config *cfg, const mk_gguf_arch *a, const mk_tensor_info *t, const char *path,
                            mk_cli_gguf_part out[2], size_t *n, char *role_qk);
/* The importances an imatrix file (read from `file`) has for source tensor t of a model, a
 * matrix quantized on its own (quantize --method search, --sensitivity imatrix): the row of
 * its llama.cpp name, and for one expert of a per-expert checkpoint (Qwen2-MoE's
 * mlp.experts.E.*, Mixtral's block_sparse_moe.experts.E.*) expert E's row of ffn_*_exps, as
 * llama-quantize gives that expert's slice. *imp NULL (MK_OK) when the file has none, or t is
 * not 2-D (fused 3-D experts are not quantized there). An entry of other matrices or widths:
 * MK_ERR_FORMAT naming file, entry and t (`noun`: what the message calls t); model names the
 * model in errors of its own. */
mk_status mk_cli_imatrix_for(const mk_imatrix *im, const char *file, const char *model, const mk_model_config *cfg, const mk_gguf_arch *a,
                             const mk_tensor_info *t, const char *noun, const float **imp);
/* True for llama.cpp's expert-routing matrices (ffn_gate_inp): llama-quantize keeps them
 * as they are (F32 from convert_hf_to_gguf.py). */
bool mk_cli_gguf_is_router(const char *gguf_name);
/* convert_hf_to_gguf.py's expert keys: {arch}.expert_count, expert_used_count, and for
 * qwen2moe expert_feed_forward_length, expert_shared_feed_forward_length. */
void mk_cli_gguf_moe_metadata(mk_gguf_w *w, const mk_gguf_arch *a, const mk_model_config *c);

#endif
