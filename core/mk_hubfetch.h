/* mk_hubfetch.h - models fetched from the Hugging Face Hub when the local cache lacks them,
 * by the byte ranges a run reads, into the cache in huggingface_hub's layout.
 *
 * mk_hub_fetch (called by mk_hub_resolve when the cache lacks a model and HF_HUB_OFFLINE is
 * not set) asks the Hub for the revision's commit and file list, writes refs/<revision>,
 * downloads the small files of the folder (config, tokenizer, index: *.json, *.txt, *.model,
 * *.jinja, *.tiktoken) whole into blobs/<etag> with their snapshots/<commit>/ links, and
 * for each *.safetensors file makes a sparse file of its full size in a private staging
 * folder:
 *
 *   <repo>/.mergekit-c-partial/<commit>/[sub/]NAME            sparse, real size
 *   <repo>/.mergekit-c-partial/<commit>/[sub/].NAME.mkremote  where it comes from (JSON)
 *   <repo>/.mergekit-c-partial/<commit>/[sub/].NAME.ranges    byte ranges present ("A B\n")
 *
 * and returns that folder. Weights are then fetched on demand: mk_rfile (mk_io.h) asks this
 * module for every range it reads (a safetensors header first, so a plan sees every recipe
 * error before any weight is downloaded; then the tensors the run reads, and only those).
 * A file whose every byte is present is checked against its LFS sha256 and moved to
 * blobs/<sha256> with its snapshot link, where huggingface_hub and other tools find it; a
 * blob with the wrong hash is never written. Ranges survive a killed run (the next run
 * fetches only what is missing); a cut connection is resumed from the last byte received;
 * connection failures, 429 and 5xx are retried with backoff.
 *
 * Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN, else the token file
 * ($HF_TOKEN_PATH, else $HF_HOME/token, else ~/.cache/huggingface/token), as huggingface_hub
 * reads them. MK_HUB_RETRIES (default 5) and MK_HUB_BACKOFF_MS (first delay, default 500,
 * doubled each try up to 8 s).
 * Must not: know tensors or formats (it fetches the byte ranges it is asked for).
 */
#ifndef MK_HUBFETCH_H
#define MK_HUBFETCH_H

#include "mk_core.h"

/* The staging folder's name inside a cache repository folder. */
#define MK_HUB_PARTIAL_DIR ".mergekit-c-partial"

/* Fetch what `id` (org/name) at `rev` (a branch, tag or commit) needs into the cache repo
 * folder `repo` and set *out to the model folder (sub: "" or a folder inside it).
 * Errors: one line naming the repository and what to do (401/403: a gated or private
 * repository and the token; 404: no such repository or revision; the network). */
mk_status mk_hub_fetch(const char *id, const char *rev, const char *sub, const char *repo, char **out);

/* The staging folder of commit `commit` under `repo` when it still has files being fetched
 * (allocated), else NULL: mk_hub_resolve prefers it to the snapshot, which lacks them. A
 * file another tool completed in the snapshot meanwhile is taken from there. */
char *mk_hub_partial_dir(const char *repo, const char *commit);

/* Bytes fetched from the network by this process (headers, small files and weights). */
uint64_t mk_hub_fetched_bytes(void);

/* Make mk_rfile read fetched files through this module (once, at start: the CLI does). */
void mk_hub_fetch_install(void);

/* Whether `path` is a file still being fetched, and its sha256 as the Hub gives it (the
 * provenance of a merge records that instead of hashing a file it has only in part). */
bool mk_hub_remote_sha256(const char *path, char out[65]);

/* For --dry-run: the bytes of [off, off + len) of `path` not yet present (0 for a file that
 * is not being fetched). */
uint64_t mk_hub_missing(const char *path, uint64_t off, uint64_t len);

#endif
