/* test_recipe.c - recipe parsing (every error path names FILE:LINE:COL), parameter values,
 * gradient interpolation as mergekit does it, filters and precedence helpers. */
#include "harness.h"

#include "../../merge/recipe.h"

#include <stdlib.h>

static mk_status parse(const char *text, mk_recipe *r)
{
    return mk_recipe_parse(text, strlen(text), "r.yaml", r);
}

static void expect_err(const char *text, const char *needle)
{
    mk_recipe r;
    mk_status s = parse(text, &r);
    CHECK_MSG(s == MK_ERR_RECIPE && strstr(mk_errmsg(), needle), "recipe:\n%s\ngot %d \"%s\", want recipe error with \"%s\"",
              text, (int)s, s ? mk_errmsg() : "", needle);
    mk_recipe_free(&r);
}

MK_TEST(recipe_models_syntax)
{
    mk_recipe r;
    const char *y = "merge_method: linear\n"
                    "base_model: base/\n"
                    "models:\n"
                    "  - model: a/\n"
                    "    parameters:\n"
                    "      weight: 0.3\n"
                    "      density: [0, 0.5, 1]\n"
                    "  - model: b/+lora/\n"
                    "    parameters:\n"
                    "      weight:\n"
                    "        - filter: mlp\n"
                    "          value: 0.7\n"
                    "        - value: 0.2\n"
                    "parameters:\n"
                    "  normalize: true\n"
                    "dtype: bfloat16\n"
                    "out_dtype: torch.float16\n"
                    "random_seed: 42\n"
                    "tokenizer_source: base\n";
    CHECK_OK(parse(y, &r));
    CHECK_STR(r.method, "linear");
    CHECK(r.has_base);
    CHECK_STR(r.base.path, "base/");
    CHECK_EQ_INT(r.n_models, 2);
    CHECK_STR(r.models[1].ref.path, "b/");
    CHECK_STR(r.models[1].ref.lora, "lora/");
    CHECK_EQ_INT(r.models[0].params.n, 2);
    CHECK(r.models[0].params.p[1].value.kind == MK_PV_GRADIENT);
    CHECK(r.models[1].params.p[0].value.kind == MK_PV_COND);
    CHECK_EQ_INT(r.dtype, MK_BF16);
    CHECK_EQ_INT(r.out_dtype, MK_F16);
    CHECK(r.has_seed && r.seed == 42);
    CHECK_STR(r.tokenizer_source, "base");
    CHECK_EQ_INT(r.method_pos.line, 1);
    CHECK_EQ_INT(r.method_pos.col, 15);
    const mk_model_ref *refs[8];
    CHECK_EQ_INT(mk_recipe_models(&r, refs, 8), 3);
    CHECK_STR(refs[0]->text, "base/");
    double v;
    CHECK(mk_pvalue_eval(&r.models[1].params.p[0].value, "model.layers.0.mlp.up_proj.weight", 0, &v) && v == 0.7);
    CHECK(mk_pvalue_eval(&r.models[1].params.p[0].value, "model.layers.0.self_attn.q_proj.weight", 0, &v) && v == 0.2);
    CHECK(mk_params_find(&r.params, "normalize") != NULL);
    CHECK(mk_params_find(&r.params, "weight") == NULL);
    mk_recipe_free(&r);
}

MK_TEST(recipe_slices_syntax)
{
    mk_recipe r;
    const char *y = "slices:\n"
                    "  - sources:\n"
                    "      - model: a/\n"
                    "        layer_range: [0, 24]\n"
                    "  - sources:\n"
                    "      - model: a/\n"
                    "        layer_range: [8, 32]\n"
                    "    parameters:\n"
                    "      scale: 0.5\n"
                    "merge_method: passthrough\n";
    CHECK_OK(parse(y, &r));
    CHECK_EQ_INT(r.n_slices, 2);
    CHECK_EQ_INT(r.slices[1].sources[0].start, 8);
    CHECK_EQ_INT(r.slices[1].sources[0].end, 32);
    CHECK_EQ_INT(r.slices[1].params.n, 1);
    const mk_model_ref *refs[4];
    CHECK_EQ_INT(mk_recipe_models(&r, refs, 4), 1);
    mk_recipe_free(&r);
}

MK_TEST(recipe_gradient_interpolation)
{
    /* mergekit's rule: s = t*(L-1), i0 = floor(s), f = s - i0 */
    mk_recipe r;
    const char *y = "merge_method: slerp\nmodels:\n  - model: a/\nparameters:\n"
                    "  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n"
                    "    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5\n";
    CHECK_OK(parse(y, &r));
    const mk_pvalue *t = &r.params.p[0].value;
    double v;
    /* examples/gradient-slerp.yml over 40 layers: layer 10 self-attn */
    double tt = 10.0 / 39.0;
    CHECK(mk_pvalue_eval(t, "model.layers.10.self_attn.q_proj.weight", tt, &v));
    double s = tt * 4, f = s - 1;
    CHECK_MSG(v == (1 - f) * 0.5 + f * 0.3, "got %.17g", v);
    CHECK(mk_pvalue_eval(t, "model.layers.0.mlp.up_proj.weight", 0, &v) && v == 1.0);
    CHECK(mk_pvalue_eval(t, "model.layers.39.mlp.up_proj.weight", 1, &v) && v == 0.0);
    CHECK(mk_pvalue_eval(t, "model.norm.weight", 0, &v) && v == 0.5);
    CHECK(mk_pvalue_eval(t, "model.layers.3.self_attn.o_proj.weight", 0.5, &v) && v == 0.3);
    CHECK(mk_pvalue_eval(t, "model.layers.3.self_attn.o_proj.weight", 0.625, &v) && fabs(v - 0.5) < 1e-15);
    mk_recipe_free(&r);
    /* a one-element gradient is a constant; a filter with no match is "not set" */
    CHECK_OK(parse("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      weight: [0.25]\n"
                   "      density:\n        - filter: nothing\n          value: 1\n",
                   &r));
    CHECK(mk_pvalue_eval(&r.models[0].params.p[0].value, "x", 0.9, &v) && v == 0.25);
    CHECK(!mk_pvalue_eval(&r.models[0].params.p[1].value, "x", 0.9, &v));
    mk_recipe_free(&r);
}

MK_TEST(recipe_values_as_mergekit_reads_them)
{
    mk_recipe r;
    CHECK_OK(parse("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      weight: '0.5'\n"
                   "      density: 1e-3\n      normalize: yes\n      x: false\n",
                   &r));
    double v;
    CHECK(mk_pvalue_eval(&r.models[0].params.p[0].value, "t", 0, &v) && v == 0.5);
    CHECK(mk_pvalue_eval(&r.models[0].params.p[1].value, "t", 0, &v) && v == 1e-3);
    CHECK(mk_pvalue_eval(&r.models[0].params.p[2].value, "t", 0, &v) && v == 1);
    CHECK(mk_pvalue_eval(&r.models[0].params.p[3].value, "t", 0, &v) && v == 0);
    mk_recipe_free(&r);
    /* the model shorthand and the dict form of a reference */
    CHECK_OK(parse("merge_method: linear\nmodels:\n  - a/\n  - model:\n      model:\n        path: b/\n      lora: c/\n", &r));
    CHECK_STR(r.models[0].ref.path, "a/");
    CHECK_STR(r.models[1].ref.path, "b/");
    CHECK_STR(r.models[1].ref.lora, "c/");
    CHECK_STR(r.models[1].ref.text, "b/+c/");
    mk_recipe_free(&r);
}

MK_TEST(recipe_errors)
{
    expect_err("", "empty");
    expect_err("merge_method: [linear\n", "YAML error");
    expect_err("- a\n- b\n", "the recipe must be a mapping");
    expect_err("models:\n  - model: a/\n", "missing 'merge_method'");
    expect_err("merge_method: linear\n", "exactly one of 'models', 'slices' or 'modules'");
    expect_err("merge_method: linear\nmodels: [{model: a/}]\nslices: [{sources: [{model: a/}]}]\n", "exactly one of");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\nmodelz: 1\n", "r.yaml:4:1: unknown key 'modelz' in the recipe (did you mean 'models'?)");
    expect_err("merge_method: linear\nmodels:\n  - modle: a/\n", "unknown key 'modle' in models[0] (did you mean 'model'?)");
    expect_err("merge_method: linear\nmodels:\n  - parameters: {weight: 1}\n", "models[0] has no 'model'");
    expect_err("merge_method: linear\nmodels: a/\n", "'models' must be a list");
    expect_err("merge_method: linear\nmodels: []\n", "'models' is empty");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      weight: abc\n",
               "r.yaml:5:15: parameter 'weight' must be a number, found 'abc'");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      weight: .nan\n", "finite");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      weight: .inf\n", "finite");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      weight: [1, [2]]\n", "gradient is a list of numbers");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      weight: {filter: x, value: 1}\n",
               "must be inside a list");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      weight: [{filter: x}]\n", "has no 'value'");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      weight: []\n", "empty list");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      w: 1\n      w: 2\n", "given twice");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\ndtype: fp12\n", "dtype 'fp12' is not supported");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\ndtype: int64\n", "not supported");
    expect_err("merge_method: linear\nmodels:\n  - model: a+b+c\n", "more than one '+'");
    expect_err("merge_method: linear\nmodels:\n  - model: a@x@y\n", "more than one '@'");
    expect_err("merge_method: linear\nmodels:\n  - model: ''\n", "empty");
    expect_err("merge_method: passthrough\nslices:\n  - sources:\n      - model: a/\n        layer_range: [4, 2]\n",
               "ends before it starts");
    expect_err("merge_method: passthrough\nslices:\n  - sources:\n      - model: a/\n        layer_range: [0]\n",
               "layer_range must be a list [start, end]");
    expect_err("merge_method: passthrough\nslices:\n  - sources:\n      - model: a/\n        layer_range: [0, x]\n",
               "must be an integer");
    expect_err("merge_method: passthrough\nslices:\n  - sources: []\n", "sources is empty");
    expect_err("merge_method: passthrough\nslices:\n  - parameters: {}\n", "has no 'sources'");
    expect_err("merge_method: linear\nmodules:\n  text: {}\n", "'modules'");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\ntokenizer:\n  tokens:\n    x: {source: a/}\n    x: {force: true}\n",
               "token 'x' has two conflicting entries in tokenizer tokens (the other at 6:5)");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\ntokenizer:\n  tokens:\n    x: {source: {kind: zero, model: a/}}\n",
               "a zero source takes no model");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\ntokenizer:\n  tokens:\n    x: {source: {kind: other}}\n",
               "unknown source kind 'other'");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\ntokenizer:\n  pad_to_multiple_of: 0\n", "pad_to_multiple_of");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\ntokenizer_source: base\ntokenizer: {source: base}\n",
               "cannot both be set");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\nrandom_seed: -3\n", "random_seed must be between");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\n---\nmerge_method: linear\nmodels:\n  - model: b/\n",
               "several YAML documents");
    expect_err("merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      weight: !!binary aGVsbG8=\n", "must be a number");
}

MK_TEST(recipe_yaml_bombs_are_bounded)
{
    /* alias expansion: each level is nine conditionals whose values alias the previous
     * level, a valid structure that would expand to 9^9 values */
    char y[4096];
    size_t k = (size_t)snprintf(y, sizeof y, "merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      a0: &a0 [1,1,1,1,1,1,1,1,1]\n");
    for (int i = 1; i < 10; i++) {
        k += (size_t)snprintf(y + k, sizeof y - k, "      a%d: &a%d [", i, i);
        for (int j = 0; j < 9; j++) k += (size_t)snprintf(y + k, sizeof y - k, "%s{value: *a%d}", j ? "," : "", i - 1);
        k += (size_t)snprintf(y + k, sizeof y - k, "]\n");
    }
    expect_err(y, "alias bomb");
    /* deep nesting of conditionals */
    mk_buf b = {0};
    mk_buf_puts(&b, "merge_method: linear\nmodels:\n  - model: a/\n    parameters:\n      w: ");
    for (int i = 0; i < 40; i++) mk_buf_puts(&b, "[{value: ");
    mk_buf_puts(&b, "1");
    for (int i = 0; i < 40; i++) mk_buf_puts(&b, "}]");
    mk_buf_puts(&b, "\n");
    expect_err(b.data, "nested too deeply");
    mk_buf_free(&b);
    /* a NUL byte in the file */
    mk_recipe r;
    CHECK_ERR(mk_recipe_parse("merge_method: linear\0x", 22, "r.yaml", &r), MK_ERR_RECIPE, "NUL");
    mk_recipe_free(&r);
}

MK_TEST(util_parse_size)
{
    uint64_t v;
    CHECK(mk_parse_size("5e9", &v) && v == 5000000000ull);
    CHECK(mk_parse_size("500M", &v) && v == 500000000ull);
    CHECK(mk_parse_size("2G", &v) && v == 2000000000ull);
    CHECK(mk_parse_size("5B", &v) && v == 5000000000ull); /* mergekit: B = billion */
    CHECK(mk_parse_size("1.5GB", &v) && v == 1500000000ull);
    CHECK(mk_parse_size("2GiB", &v) && v == 2147483648ull);
    CHECK(mk_parse_size("4096", &v) && v == 4096);
    CHECK(!mk_parse_size("-1", &v));
    CHECK(!mk_parse_size("5X", &v));
    CHECK(!mk_parse_size("", &v));
    CHECK(!mk_parse_size("nan", &v));
}

MK_TEST(util_did_you_mean)
{
    const char *c[] = {"linear", "slerp", "ties", "dare_ties", "task_arithmetic"};
    CHECK_STR(mk_did_you_mean("dare-ties", c, 5), "dare_ties");
    CHECK_STR(mk_did_you_mean("lineer", c, 5), "linear");
    CHECK(mk_did_you_mean("completely_else", c, 5) == NULL);
}
