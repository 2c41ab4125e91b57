/* mk_hub.h - Hugging Face model ids, resolved in the local cache as huggingface_hub lays it
 * out (huggingface_hub 2.4: constants.py, file_download.py):
 *
 *   <cache>/models--<org>--<name>/refs/<branch or tag>   a 40-hex commit, no newline
 *   <cache>/models--<org>--<name>/snapshots/<commit>/... the files, usually relative
 *                                                         symlinks into ../../blobs/
 *   <cache>/models--<org>--<name>/blobs/<sha256>          LFS files (weights), by content
 *   <cache>/models--<org>--<name>/blobs/<git sha1>        small files (config.json, ...)
 *
 * <cache> is $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (its old name), else $HF_HOME/hub,
 * else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub (empty variables count
 * as unset); a leading ~ is $HOME, as os.path.expanduser has it ($VARS inside them are not
 * expanded, unlike huggingface_hub's os.path.expandvars).
 *
 * A model the cache lacks is fetched (mk_hubfetch.h) unless HF_HUB_OFFLINE is set; a
 * snapshot still being fetched resolves to its staging folder.
 * Must not: read model files (only names, links and refs; blob hashes on request), touch
 * the network itself. Nothing here writes to the cache (mk_hubfetch.c does).
 */
#ifndef MK_HUB_H
#define MK_HUB_H

#include "mk_core.h"

/* Resolve a model reference `ref`, with `revision` (NULL for none; a revision may also end
 * ref after '@' when revision is NULL):
 *   an existing local file or folder    -> itself: a local path always wins (*cached false;
 *                                          a revision given with it is reported by mk_warn)
 *   org/name[/sub/folder][@revision]    -> <cache>/models--org--name/snapshots/<commit>[/sub]
 *   name[@revision] (no owner)          -> the same, when the cache has models--name
 * revision: a branch or tag (read from refs/), or a 40-hex commit; "main" when absent.
 * Anything else that does not exist (./x, /abs/x, a bare name not cached) comes back
 * unchanged, for the caller's own "no such file" message.
 * Refusals, one line naming the id, the cache folder and what to do:
 *   MK_ERR_USAGE  a malformed id (huggingface_hub's rules), subfolder or revision
 *                 (empty, "..", characters a git ref cannot hold)
 *   MK_ERR_IO     not cached (with HF_HUB_OFFLINE; otherwise what the fetch says): no
 *                 repository, no such ref, a missing snapshot or subfolder, a symlink to a
 *                 missing blob (an unfinished download)
 *   MK_ERR_FORMAT a ref that holds no commit hash, a link out of the repository folder
 *   MK_ERR_MISMATCH with verification on: an LFS blob whose sha256 is not its name
 * *out is allocated. */
mk_status mk_hub_resolve(const char *ref, const char *revision, char **out, bool *cached);
/* Check the sha256 of every LFS blob (named by 64 hex digits) a resolved folder links to
 * (reads the whole files; off by default). Process-wide, like the thread count. */
void mk_hub_set_verify(bool on);
/* The cache folder mk_hub_resolve reads (allocated; NULL when out of memory). */
char *mk_hub_cache_dir(void);
/* HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is 1, ON, YES or TRUE in any case. */
bool mk_hub_offline(void);

#endif
