/* test_estimate.c - the worked numbers of "AI Engineering" (Chip Huyen, ch. 7) that the
 * estimate command must reproduce exactly (GB = 1e9 bytes), the shape read from
 * config.json, and the formatting of the printed figures. */
#include "harness.h"

#include "../../model/estimate.h"

#define GB 1e9
#define MB 1e6

static void check_bytes(const char *file, int line, double got, double want, const char *txt)
{
    char buf[32];
    if (got != want) mk_test_fail(file, line, "%.17g bytes, want %.17g", got, want);
    const char *s = mk_est_fmt_bytes(got, buf);
    if (strcmp(s, txt) != 0) mk_test_fail(file, line, "printed \"%s\", want \"%s\"", s, txt);
}
#define CHECK_BYTES(got, want, txt) check_bytes(__FILE__, __LINE__, got, want, txt)

MK_TEST(estimate_serving_numbers)
{
    /* 13B in 16-bit: 26 GB of weights, 31.2 GB to serve (x 1.2); 70B: 140 GB */
    double w13 = mk_est_weights(13000000000ull, 2);
    CHECK_BYTES(w13, 26 * GB, "26.0 GB");
    CHECK_BYTES(mk_est_serve(w13), 31.2 * GB, "31.2 GB");
    CHECK_BYTES(mk_est_weights(70000000000ull, 2), 140 * GB, "140 GB");
}

MK_TEST(estimate_training_numbers)
{
    /* full finetune of 7B with Adam in 16-bit: 14 (weights) + 42 (gradients + 2 states) = 56 GB */
    double w = mk_est_weights(7000000000ull, 2), go = mk_est_grad_optim(7000000000ull, 2, MK_OPTIM_ADAM);
    CHECK_BYTES(w, 14 * GB, "14.0 GB");
    CHECK_BYTES(go, 42 * GB, "42.0 GB");
    CHECK_BYTES(w + go, 56 * GB, "56.0 GB");
    /* gradients + Adam states: 13B trainable -> 78 GB, 1B -> 6 GB */
    CHECK_BYTES(mk_est_grad_optim(13000000000ull, 2, MK_OPTIM_ADAM), 78 * GB, "78.0 GB");
    CHECK_BYTES(mk_est_grad_optim(1000000000ull, 2, MK_OPTIM_ADAM), 6 * GB, "6.00 GB");
    /* SGD keeps no state, momentum one value */
    CHECK_BYTES(mk_est_grad_optim(1000000000ull, 2, MK_OPTIM_SGD), 2 * GB, "2.00 GB");
    CHECK_BYTES(mk_est_grad_optim(1000000000ull, 2, MK_OPTIM_MOMENTUM), 4 * GB, "4.00 GB");
}

static mk_est_shape mha(long layers, long d)
{
    mk_est_shape s = {0};
    s.layers = layers;
    s.hidden = d;
    s.heads = s.kv_heads = d / 128;
    s.head_dim = 128;
    s.intermediate = 4 * d;
    s.vocab = 50257;
    s.gated = false;
    return s;
}

MK_TEST(estimate_lora_numbers)
{
    char a[32];
    uint64_t n = 0;
    /* GPT-3 175B: 96 layers, d = 12,288, rank 2 on q, k, v, o: 18,874,368 (37.7 MB in 16-bit) */
    mk_est_shape g3 = mha(96, 12288);
    CHECK_OK(mk_est_lora_shape(&g3, "q,k,v,o", 2, &n));
    CHECK_EQ_INT(n, 18874368);
    CHECK_STR(mk_est_fmt_int(n, a), "18,874,368");
    CHECK_BYTES(mk_est_weights(n, 2), 37748736, "37.7 MB");
    /* Llama 2 13B: 40 layers, 5,120: 3.28M (6.55 MB) */
    mk_est_shape l2 = mha(40, 5120);
    l2.gated = true;
    CHECK_OK(mk_est_lora_shape(&l2, "q_proj,k_proj,v_proj,o_proj", 2, &n));
    CHECK_EQ_INT(n, 3276800);
    CHECK_STR(mk_est_fmt_count(n, a), "3.28M");
    CHECK_BYTES(mk_est_weights(n, 2), 6553600, "6.55 MB");
    /* one 4096 x 4096 matrix at rank 8: 65,536; 100 customers: 1.68B as full matrices, 23.3M
     * as one matrix + 100 adapters */
    mk_est_shape m;
    mk_est_shape_matrix(&m, 4096, 4096);
    uint64_t total, lin, full, shared;
    mk_est_params_shape(&m, &total, &lin);
    CHECK_EQ_INT(total, 16777216);
    CHECK_OK(mk_est_lora_shape(&m, "all", 8, &n));
    CHECK_EQ_INT(n, 65536);
    mk_est_fleet(total, n, 100, &full, &shared);
    CHECK_EQ_INT(full, 1677721600);
    CHECK_EQ_INT(shared, 23330816);
    CHECK_STR(mk_est_fmt_count(full, a), "1.68B");
    CHECK_STR(mk_est_fmt_count(shared, a), "23.3M");
    /* unknown target names are refused with the known ones listed */
    CHECK_ERR(mk_est_lora_shape(&l2, "q,zz", 2, &n), MK_ERR_USAGE, "unknown target 'zz'");
    CHECK_ERR(mk_est_lora_shape(&g3, "gate", 2, &n), MK_ERR_USAGE, "no gate projection");
}

MK_TEST(estimate_shape_from_config)
{
    /* Llama-2-13b-hf's config.json: 13,015,864,320 parameters */
    const char *llama = "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 5120,"
                        " \"intermediate_size\": 13824, \"num_attention_heads\": 40, \"num_hidden_layers\": 40,"
                        " \"num_key_value_heads\": 40, \"vocab_size\": 32000, \"tie_word_embeddings\": false}";
    mk_est_shape s;
    CHECK_OK(mk_est_shape_from_config(llama, strlen(llama), "config.json", &s));
    uint64_t total, lin, n;
    mk_est_params_shape(&s, &total, &lin);
    CHECK_EQ_INT(total, 13015864320ull);
    CHECK_OK(mk_est_lora_shape(&s, "q,k,v,o", 2, &n));
    CHECK_EQ_INT(n, 3276800);
    /* KV cache: 2 x 40 layers x 40 heads x 128 x batch 1 x 4096 tokens x 2 bytes = 3.36 GB */
    CHECK_BYTES(mk_est_kv_cache(&s, 1, 4096, 2), 3355443200.0, "3.36 GB");
    /* GPT-2 small (124,439,808 parameters, tied lm_head, learned positions, biases) */
    const char *gpt2 = "{\"model_type\": \"gpt2\", \"n_embd\": 768, \"n_layer\": 12, \"n_head\": 12, \"n_positions\": 1024,"
                       " \"vocab_size\": 50257}";
    CHECK_OK(mk_est_shape_from_config(gpt2, strlen(gpt2), "config.json", &s));
    mk_est_params_shape(&s, &total, &lin);
    CHECK_EQ_INT(total, 124439808);
    CHECK(s.tied && !s.gated);
    /* grouped-query attention: Llama-3-8B, 8,030,261,248 parameters */
    const char *l3 = "{\"model_type\": \"llama\", \"hidden_size\": 4096, \"intermediate_size\": 14336,"
                     " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
                     " \"vocab_size\": 128256, \"tie_word_embeddings\": false}";
    CHECK_OK(mk_est_shape_from_config(l3, strlen(l3), "config.json", &s));
    mk_est_params_shape(&s, &total, &lin);
    CHECK_EQ_INT(total, 8030261248ull);
    CHECK_ERR(mk_est_shape_from_config("{\"hidden_size\": 64}", 19, "c.json", &s), MK_ERR_FORMAT, "missing num_hidden_layers");
    CHECK_ERR(mk_est_shape_from_config("{\"hidden_size\": -1, \"num_hidden_layers\": 2}", 43, "c.json", &s), MK_ERR_FORMAT,
              "hidden_size: expected a positive integer");
}

MK_TEST(estimate_qlora_and_format)
{
    char a[32];
    /* NF4 with double quantisation: 4.127 bits per weight (QLoRA paper) */
    double q = mk_est_qlora_weights(1000000000ull, 0, 2);
    CHECK_MSG(fabs(q - 1000000000.0 * (4 + 0.125 + 1.0 / 512) / 8) < 1e-3, "NF4 bytes %.17g", q);
    CHECK_BYTES(mk_est_qlora_weights(0, 1000, 2), 2000, "2.00 KB");
    CHECK_STR(mk_est_fmt_bytes(999.0, a), "999 B");
    CHECK_STR(mk_est_fmt_bytes(999600.0, a), "1.00 MB");
    CHECK_STR(mk_est_fmt_count(999, a), "999");
    CHECK_STR(mk_est_fmt_int(1000, a), "1,000");
    CHECK_STR(mk_est_fmt_int(7, a), "7");
}

/* A model stored quantized (request.stored > 0): the bytes as stored serve and carry the LoRA /
 * QLoRA base; a full finetune trains N values at bytes per value; the fleet of full copies is n
 * stored models. 7B whose 6B linear weights are NF4 with double quant (4.127 bits) and the rest
 * bf16: 3.095 + 2 = 5.10 GB. */
MK_TEST(estimate_stored_weights)
{
    const uint64_t N = 7000000000ull, lin = 6000000000ull, lora = 4000000;
    const double stored = (double)lin * MK_EST_NF4_BITS / 8.0 + (double)(N - lin) * 2.0;
    mk_est_request r = {.bpv = 2, .train = MK_TRAIN_FULL, .optim = MK_OPTIM_ADAM, .adapters = 10, .stored = stored};
    mk_est_figures f;
    mk_est_compute(NULL, N, lin, lora, &r, &f);
    CHECK_BYTES(f.weights, stored, "5.10 GB");
    CHECK_BYTES(f.serve, stored * 6.0 / 5.0, "6.11 GB");
    CHECK_BYTES(f.train_weights, 14 * GB, "14.0 GB"); /* full: every weight trained at bf16 */
    CHECK_BYTES(f.grad_optim, 42 * GB, "42.0 GB");
    CHECK_BYTES(f.fleet_full_bytes, 10 * stored, "51.0 GB");
    CHECK_BYTES(f.fleet_shared_bytes, stored + 10 * 8e6, "5.18 GB");
    CHECK_EQ_INT(f.fleet_full, 10 * N);
    r.train = MK_TRAIN_QLORA; /* the base as stored, not re-quantized; the adapters at bf16 */
    mk_est_compute(NULL, N, lin, lora, &r, &f);
    CHECK_BYTES(f.train_weights, stored + 8e6, "5.10 GB");
    CHECK_BYTES(f.grad_optim, 24e6, "24.0 MB");
    r.train = MK_TRAIN_LORA;
    mk_est_compute(NULL, N, lin, lora, &r, &f);
    CHECK_BYTES(f.train_weights, stored + 8e6, "5.10 GB");
    /* without stored bytes, the same request prices every weight at bpv, as before */
    r.stored = 0;
    mk_est_compute(NULL, N, lin, lora, &r, &f);
    CHECK_BYTES(f.weights, 14 * GB, "14.0 GB");
    CHECK_BYTES(f.train_weights, 14 * GB + 8e6, "14.0 GB");
    CHECK_BYTES(f.fleet_full_bytes, 140 * GB, "140 GB");
    CHECK_BYTES(f.fleet_shared_bytes, 14 * GB + 80e6, "14.1 GB");
}
