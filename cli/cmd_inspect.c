/* cmd_inspect.c - `mergekit-c inspect PATH`: tensors, dtypes, shapes, sizes, shards,
 * totals and architecture; opening the model validates every header, so a damaged file
 * is reported (one line, exit 1), not crashed on. */
#include "cli.h"

#include "../core/mk_io.h"
#include "../merge/arch.h"
#include "../quant/qsource.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *file_base(const mk_source *s, uint32_t f)
{
    const char *p = f < s->n_files ? s->files[f] : "?";
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

int mk_cmd_inspect(int argc, char **argv)
{
    mk_common c = {0};
    bool quiet_list = false;
    const mk_opt opts[] = {
        {"summary", 's', MK_OPT_FLAG, &quiet_list, NULL, "totals only, no per-tensor lines", NULL},
        MK_COMMON_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {"inspect", "PATH [options]",
                              "Show a model's tensors (name, dtype, shape, bytes, shard), totals, parameter count and\n"
                              "architecture. PATH is a model folder or a .safetensors file; every header is validated.",
                              NULL, opts, 1, 1};
    char *pos[1];
    size_t npos;
    int rc = mk_args_parse(&spec, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    mk_cli_common(&c);
    mk_source *s = NULL;
    mk_status st = mk_cli_open_model(pos[0], &s);
    if (st != MK_OK) return mk_cli_fail(st);
    char *cfg = NULL;
    size_t len = 0;
    mk_arch arch = {0};
    st = s->ops->aux_read(s, "config.json", 16u << 20, &cfg, &len);
    if (st == MK_OK) st = mk_arch_from_config(cfg, pos[0], &arch);
    free(cfg);
    if (st != MK_OK) {
        mk_source_close(s);
        return mk_cli_fail(st);
    }
    mk_qinfo qi;
    st = mk_qsource_probe(s, &qi); /* quantized checkpoints: format, block or group, bits per weight */
    if (st != MK_OK) {
        mk_arch_free(&arch);
        mk_source_close(s);
        return mk_cli_fail(st);
    }
    double bpw = qi.q_numel ? 8.0 * (double)qi.q_bytes / (double)qi.q_numel : 0;
    char qdesc[160];
    uint64_t params = 0, bytes = 0, by_dtype[MK_DTYPE_COUNT] = {0}, n_dtype[MK_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < s->n_tensors; i++) {
        params += s->tensors[i].numel;
        bytes += s->tensors[i].nbytes;
        by_dtype[s->tensors[i].dtype] += s->tensors[i].nbytes;
        n_dtype[s->tensors[i].dtype]++;
    }
    if (c.json) {
        mk_buf b = {0};
        mk_buf_puts(&b, "{\"path\": ");
        mk_buf_json_str(&b, pos[0]);
        mk_buf_printf(&b, ", \"format\": \"%s\", \"architecture\": ", s->kind);
        if (arch.arch_name) mk_buf_json_str(&b, arch.arch_name);
        else mk_buf_puts(&b, "null");
        mk_buf_printf(&b, ", \"layers\": %ld, \"tensors\": %zu, \"parameters\": %llu, \"bytes\": %llu, \"files\": [",
                      arch.num_layers, s->n_tensors, (unsigned long long)params, (unsigned long long)bytes);
        for (size_t f = 0; f < s->n_files; f++) {
            if (f) mk_buf_puts(&b, ", ");
            mk_buf_json_str(&b, s->files[f]);
        }
        mk_buf_puts(&b, "], \"dtypes\": {");
        bool first = true;
        for (int d = 0; d < MK_DTYPE_COUNT; d++) {
            if (!n_dtype[d]) continue;
            mk_buf_printf(&b, "%s\"%s\": {\"tensors\": %llu, \"bytes\": %llu}", first ? "" : ", ", mk_dtype_name((mk_dtype)d),
                          (unsigned long long)n_dtype[d], (unsigned long long)by_dtype[d]);
            first = false;
        }
        mk_buf_puts(&b, "}, \"quantization\": ");
        if (qi.quantized) {
            mk_buf_printf(&b, "{\"format\": \"%s\", \"layout\": \"%s\", \"bits\": %u, \"block_size\": %llu, \"per_row\": %s, "
                              "\"per_tensor\": %s, \"double_quant\": %s, \"zero_points\": %s, \"quantized_tensors\": %zu, "
                              "\"quantized_parameters\": %llu, \"quantized_bytes\": %llu, \"bits_per_weight\": %.4f}",
                          qi.format, qi.layout, qi.bits, (unsigned long long)qi.block, qi.per_channel ? "true" : "false",
                          qi.per_tensor ? "true" : "false", qi.double_quant ? "true" : "false", qi.asym ? "true" : "false",
                          qi.n_quantized, (unsigned long long)qi.q_numel, (unsigned long long)qi.q_bytes, bpw);
        } else {
            mk_buf_puts(&b, "null");
        }
        mk_buf_puts(&b, ", \"tensor_list\": [");
        for (size_t i = 0; i < s->n_tensors && !quiet_list; i++) {
            const mk_tensor_info *t = &s->tensors[i];
            char sh[160];
            mk_buf_puts(&b, i ? ",\n  " : "\n  ");
            mk_buf_puts(&b, "{\"name\": ");
            mk_buf_json_str(&b, t->name);
            mk_buf_printf(&b, ", \"dtype\": \"%s\", \"shape\": %s, \"bytes\": %llu, \"file\": ", mk_dtype_name(t->dtype),
                          mk_shape_str(t, sh), (unsigned long long)t->nbytes);
            mk_buf_json_str(&b, file_base(s, t->file));
            mk_buf_puts(&b, "}");
        }
        mk_buf_puts(&b, "]}\n");
        if (b.failed) st = mk_error(MK_ERR_NOMEM, "out of memory");
        else fputs(b.data, stdout);
        mk_buf_free(&b);
    } else {
        char a[32];
        printf("%s: %s, %zu file(s)", pos[0], s->kind, s->n_files);
        if (arch.arch_name) printf(", %s", arch.arch_name);
        if (arch.num_layers >= 0) printf(", %ld layers", arch.num_layers);
        printf("\n");
        if (!quiet_list) {
            for (size_t i = 0; i < s->n_tensors; i++) {
                const mk_tensor_info *t = &s->tensors[i];
                char sh[160];
                printf("  %-60s %-8s %-18s %14llu  %s\n", t->name, mk_dtype_name(t->dtype), mk_shape_str(t, sh),
                       (unsigned long long)t->nbytes, file_base(s, t->file));
            }
        }
        printf("tensors: %zu  parameters: %llu  bytes: %s\n", s->n_tensors, (unsigned long long)params, mk_fmt_bytes(bytes, a));
        for (int d = 0; d < MK_DTYPE_COUNT; d++)
            if (n_dtype[d])
                printf("  %-8s %6llu tensors  %s\n", mk_dtype_name((mk_dtype)d), (unsigned long long)n_dtype[d],
                       mk_fmt_bytes(by_dtype[d], a));
        if (qi.quantized)
            printf("quantized: %s; %zu weights, %llu parameters, %.3f bits per weight\n", mk_qinfo_describe(&qi, qdesc),
                   qi.n_quantized, (unsigned long long)qi.q_numel, bpw);
    }
    mk_arch_free(&arch);
    mk_source_close(s);
    return st == MK_OK ? 0 : mk_cli_fail(st);
}
