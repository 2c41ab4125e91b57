/* test_lora_peft.c - adapter_config.json parsing (defaults, patterns, target matching as
 * PEFT's check_target_module_exists and get_pattern_key do, hostile values) and the pairing
 * of adapter tensors into modules with its shape checks. */
#include "harness.h"

#include "../../formats/peft.h"

#include <stdlib.h>

static mk_status parse(const char *json, mk_peft_config *c)
{
    return mk_peft_config_parse(json, strlen(json), "adapter_config.json", c);
}

MK_TEST(peft_config_defaults_and_scaling)
{
    mk_peft_config c;
    CHECK_OK(parse("{\"peft_type\": \"LORA\", \"target_modules\": [\"q_proj\"]}", &c));
    CHECK_EQ_INT(c.r, 8); /* LoraConfig defaults */
    CHECK_MSG(c.alpha == 8, "alpha %g, want 8", c.alpha);
    CHECK(!c.use_rslora && !c.fan_in_fan_out);
    mk_peft_config_free(&c);
    CHECK_MSG(mk_peft_scaling(false, 8, 16) == 2.0, "alpha/r");
    CHECK_MSG(mk_peft_scaling(true, 16, 8) == 2.0, "alpha/sqrt(r)");
    CHECK_MSG(mk_peft_scaling(true, 6, 5) == 5.0 / sqrt(6.0), "rsLoRA 5/sqrt(6)");
}

MK_TEST(peft_patterns_first_match_wins)
{
    mk_peft_config c;
    CHECK_OK(parse("{\"r\": 6, \"lora_alpha\": 12, \"target_modules\": [\"q_proj\", \"down_proj\"],"
                   " \"rank_pattern\": {\"q_proj\": 2, \"model.layers.1.mlp.down_proj\": 3, \"layers\\\\.\\\\d+\\\\.mlp.down_proj\": 5},"
                   " \"alpha_pattern\": {\"k_proj\": 7.5}}",
                   &c));
    long r;
    double a;
    mk_peft_module_ra(&c, "model.layers.0.self_attn.q_proj", &r, &a);
    CHECK_EQ_INT(r, 2);
    CHECK_MSG(a == 12, "alpha %g", a);
    mk_peft_module_ra(&c, "model.layers.1.mlp.down_proj", &r, &a);
    CHECK_EQ_INT(r, 3); /* the exact key comes first in the object */
    mk_peft_module_ra(&c, "model.layers.0.mlp.down_proj", &r, &a);
    CHECK_EQ_INT(r, 5); /* \d+ */
    mk_peft_module_ra(&c, "model.layers.0.self_attn.k_proj", &r, &a);
    CHECK_EQ_INT(r, 6);
    CHECK_MSG(a == 7.5, "alpha %g, want 7.5", a);
    /* (.*\.)?(key)$: a key matches whole name components only */
    mk_peft_module_ra(&c, "model.layers.0.self_attn.xq_proj", &r, &a);
    CHECK_EQ_INT(r, 6);
    mk_peft_config_free(&c);
}

MK_TEST(peft_target_matching)
{
    mk_peft_config c;
    CHECK_OK(parse("{\"target_modules\": [\"q_proj\", \"model.layers.0.mlp.up_proj\"], \"exclude_modules\": [\"layers.1.self_attn.q_proj\"]}", &c));
    CHECK(mk_peft_targets(&c, "model.layers.0.self_attn.q_proj"));
    CHECK(!mk_peft_targets(&c, "model.layers.1.self_attn.q_proj")); /* excluded */
    CHECK(mk_peft_targets(&c, "model.layers.0.mlp.up_proj"));
    CHECK(!mk_peft_targets(&c, "model.layers.1.mlp.up_proj"));
    CHECK(!mk_peft_targets(&c, "model.layers.0.self_attn.xq_proj"));
    mk_peft_config_free(&c);
    /* a string is a regular expression that must match the whole name */
    CHECK_OK(parse("{\"target_modules\": \".*\\\\.layers\\\\.1\\\\.self_attn\\\\.(q|v)_proj\"}", &c));
    CHECK(mk_peft_targets(&c, "model.layers.1.self_attn.v_proj"));
    CHECK(!mk_peft_targets(&c, "model.layers.1.self_attn.k_proj"));
    CHECK(!mk_peft_targets(&c, "model.layers.11.self_attn.q_proj"));
    mk_peft_config_free(&c);
    /* layers_to_transform with and without layers_pattern; modules_to_save are never targets */
    CHECK_OK(parse("{\"target_modules\": [\"q_proj\", \"lm_head\"], \"layers_to_transform\": [1, 3], \"modules_to_save\": [\"lm_head\"]}", &c));
    CHECK(mk_peft_targets(&c, "model.layers.3.self_attn.q_proj"));
    CHECK(!mk_peft_targets(&c, "model.layers.2.self_attn.q_proj"));
    CHECK(!mk_peft_targets(&c, "lm_head"));
    mk_peft_config_free(&c);
    CHECK_OK(parse("{\"target_modules\": [\"c_attn\"], \"layers_to_transform\": 0, \"layers_pattern\": \"h\"}", &c));
    CHECK(mk_peft_targets(&c, "transformer.h.0.attn.c_attn"));
    CHECK(!mk_peft_targets(&c, "transformer.h.1.attn.c_attn"));
    mk_peft_config_free(&c);
    /* empty names are refused: the matchers once read past the module name on them (fuzz_peft) */
    CHECK_ERR(parse("{\"target_modules\": [\"q_proj\"], \"layers_to_transform\": [0, 3], \"layers_pattern\": [\"\", \"layers\"]}", &c),
              MK_ERR_FORMAT, "layers_pattern: an empty module name");
    CHECK_ERR(parse("{\"target_modules\": [\"q_proj\"], \"modules_to_save\": [\"lm_head\", \"\"]}", &c), MK_ERR_FORMAT,
              "modules_to_save: an empty module name");
    CHECK_ERR(parse("{\"target_modules\": [\"\"]}", &c), MK_ERR_FORMAT, "target_modules: an empty module name");
    CHECK_OK(parse("{\"target_modules\": \"all-linear\"}", &c));
    CHECK_EQ_INT(c.targets.kind, MK_PEFT_MATCH_ALL_LINEAR);
    mk_peft_config_free(&c);
}

MK_TEST(peft_config_hostile)
{
    mk_peft_config c;
    CHECK_ERR(parse("{\"r\": 0, \"target_modules\": [\"q\"]}", &c), MK_ERR_FORMAT, "r: expected a positive integer rank");
    CHECK_ERR(parse("{\"r\": -4, \"target_modules\": [\"q\"]}", &c), MK_ERR_FORMAT, "r: expected a positive integer rank");
    CHECK_ERR(parse("{\"r\": 2.5, \"target_modules\": [\"q\"]}", &c), MK_ERR_FORMAT, "found 2.5");
    CHECK_ERR(parse("{\"r\": 1000000, \"target_modules\": [\"q\"]}", &c), MK_ERR_FORMAT, "at most 65536");
    CHECK_ERR(parse("{\"r\": \"8\", \"target_modules\": [\"q\"]}", &c), MK_ERR_FORMAT, "found string");
    CHECK_ERR(parse("{\"lora_alpha\": \"sixteen\", \"target_modules\": [\"q\"]}", &c), MK_ERR_FORMAT,
              "lora_alpha: expected a number");
    CHECK_ERR(parse("{\"r\": 4, \"r\": 8, \"target_modules\": [\"q\"]}", &c), MK_ERR_FORMAT, "duplicate key 'r'");
    CHECK_ERR(parse("{\"peft_type\": \"IA3\", \"target_modules\": [\"q\"]}", &c), MK_ERR_UNSUPPORTED, "expected \"LORA\"");
    CHECK_ERR(parse("{\"use_dora\": true, \"target_modules\": [\"q\"]}", &c), MK_ERR_UNSUPPORTED, "DoRA");
    CHECK_ERR(parse("{\"target_modules\": \"(?<=x)q\"}", &c), MK_ERR_UNSUPPORTED, "not supported");
    CHECK_ERR(parse("{\"target_modules\": \"q(\"}", &c), MK_ERR_FORMAT, "has an unbalanced parenthesis");
    CHECK_ERR(parse("{\"rank_pattern\": {\"q\": 0}, \"target_modules\": [\"q\"]}", &c), MK_ERR_FORMAT, "rank_pattern['q']");
    CHECK_ERR(parse("{\"r\": 4}", &c), MK_ERR_FORMAT, "target_modules is missing");
    CHECK_ERR(parse("[1, 2]", &c), MK_ERR_FORMAT, "expected a JSON object");
    CHECK_ERR(parse("{\"target_modules\": [\"q\"], \"trainable_token_indices\": [1, 2]}", &c), MK_ERR_UNSUPPORTED,
              "trainable_token_indices");
    CHECK_ERR(parse("{\"target_modules\": [\"q\"", &c), MK_ERR_FORMAT, "adapter_config.json");
}

static mk_tensor_info T(const char *name, mk_dtype dt, int64_t d0, int64_t d1)
{
    mk_tensor_info t = {0};
    t.name = (char *)name;
    t.dtype = dt;
    t.ndim = d1 ? 2 : 1;
    t.shape[0] = d0;
    t.shape[1] = d1;
    mk_tensor_info_finish(&t);
    return t;
}

MK_TEST(peft_layout_pairs_and_checks)
{
    mk_peft_config c;
    CHECK_OK(parse("{\"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\", \"embed_tokens\"], \"rank_pattern\": {\"embed_tokens\": 2}}", &c));
    mk_tensor_info ok[] = {
        T("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", MK_BF16, 32, 4),
        T("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", MK_BF16, 4, 32),
        T("base_model.model.model.embed_tokens.lora_embedding_A", MK_F32, 2, 64),
        T("base_model.model.model.embed_tokens.lora_embedding_B", MK_F32, 32, 2),
        T("base_model.model.lm_head.weight", MK_BF16, 64, 32),
        T("base_model.model.model.embed_tokens.base_layer.weight", MK_BF16, 64, 32),
    };
    mk_peft_layout l;
    CHECK_OK(mk_peft_layout_build(&c, ok, 6, "a", &l));
    CHECK_EQ_INT(l.n_modules, 2);
    CHECK_EQ_INT(l.n_full, 2);
    if (l.n_modules == 2) {
        CHECK_STR(l.m[0].module, "model.embed_tokens"); /* sorted */
        CHECK(l.m[0].embedding);
        CHECK_EQ_INT(l.m[0].r, 2);
        CHECK_MSG(l.m[0].scale == 4.0, "scale %g, want 8/2", l.m[0].scale);
        CHECK_EQ_INT(l.m[1].a, 1);
        CHECK_EQ_INT(l.m[1].b, 0);
        CHECK_MSG(l.m[1].scale == 2.0, "scale %g, want 8/4", l.m[1].scale);
    }
    if (l.n_full == 2) {
        CHECK_STR(l.full[0].name, "lm_head.weight");
        CHECK_STR(l.full[1].name, "model.embed_tokens.weight"); /* base_layer. dropped */
    }
    mk_peft_layout_free(&l);

    mk_tensor_info noB[] = {T("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", MK_F32, 4, 32)};
    CHECK_ERR(mk_peft_layout_build(&c, noB, 1, "a", &l), MK_ERR_FORMAT, "has lora_A.weight but no lora_B.weight");
    mk_tensor_info badr[] = {T("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", MK_F32, 3, 32),
                             T("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", MK_F32, 32, 3)};
    CHECK_ERR(mk_peft_layout_build(&c, badr, 2, "a", &l), MK_ERR_FORMAT, "r = 4");
    mk_tensor_info mism[] = {T("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", MK_F32, 4, 32),
                             T("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", MK_F32, 32, 2)};
    CHECK_ERR(mk_peft_layout_build(&c, mism, 2, "a", &l), MK_ERR_FORMAT, "r = 4");
    mk_tensor_info noprefix[] = {T("model.layers.0.self_attn.q_proj.lora_A.weight", MK_F32, 4, 32)};
    CHECK_ERR(mk_peft_layout_build(&c, noprefix, 1, "a", &l), MK_ERR_FORMAT, "does not start with 'base_model.model.'");
    mk_tensor_info dora[] = {T("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", MK_F32, 32, 0)};
    CHECK_ERR(mk_peft_layout_build(&c, dora, 1, "a", &l), MK_ERR_UNSUPPORTED, "DoRA");
    mk_tensor_info untargeted[] = {T("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", MK_F32, 4, 32),
                                   T("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight", MK_F32, 16, 4)};
    CHECK_ERR(mk_peft_layout_build(&c, untargeted, 2, "a", &l), MK_ERR_FORMAT, "not among target_modules");
    mk_tensor_info intA[] = {T("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", MK_I8, 4, 32),
                             T("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", MK_F32, 32, 4)};
    CHECK_ERR(mk_peft_layout_build(&c, intA, 2, "a", &l), MK_ERR_FORMAT, "floating point");
    mk_peft_config_free(&c);
}

MK_TEST(peft_config_text_roundtrip)
{
    mk_peft_out_module m[3] = {{"model.layers.0.self_attn.q_proj", 8}, {"model.layers.0.self_attn.k_proj", 4},
                               {"model.layers.1.self_attn.q_proj", 8}};
    const char *save[1] = {"lm_head"};
    char *text = mk_peft_config_text("base/", 8, m, 3, save, 1, false, false, false);
    CHECK(text != NULL);
    if (!text) return;
    mk_peft_config c;
    CHECK_OK(mk_peft_config_parse(text, strlen(text), "written", &c));
    long r;
    double a;
    mk_peft_module_ra(&c, "model.layers.0.self_attn.k_proj", &r, &a);
    CHECK_EQ_INT(r, 4);
    CHECK_MSG(mk_peft_scaling(c.use_rslora, r, a) == 1.0, "scale %g, want 1", mk_peft_scaling(c.use_rslora, r, a));
    mk_peft_module_ra(&c, "model.layers.1.self_attn.q_proj", &r, &a);
    CHECK_EQ_INT(r, 8);
    CHECK_MSG(a == 8, "alpha %g", a);
    CHECK(mk_peft_targets(&c, "model.layers.5.self_attn.k_proj"));
    CHECK_EQ_INT(c.targets.n, 2);
    CHECK_EQ_INT(c.n_save, 1);
    mk_peft_config_free(&c);
    free(text);
}

/* glibc compiles x+ as x x*, so stacked or nested repetitions grow exponentially; a stray ')'
 * would close the group the pattern is wrapped in. Such patterns are refused before regcomp,
 * while ordinary ones (groups, classes, *, ?, +, {n,m}) still work. Inputs found by fuzz_peft. */
MK_TEST(peft_regex_hostile_patterns_refused)
{
    mk_peft_config c;
    CHECK_ERR(parse("{\"target_modules\": \"((((((((((((((((q+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+_proj\"}", &c), MK_ERR_FORMAT,
              "is too complex");
    CHECK_ERR(parse("{\"target_modules\": [\"q\"], \"exclude_modules\": \"a)++++++++++++++++++++++++(b\"}", &c),
              MK_ERR_FORMAT, "has an unbalanced parenthesis");
    CHECK_ERR(parse("{\"target_modules\": \"(q_proj\"}", &c), MK_ERR_FORMAT, "has an unbalanced parenthesis");
    CHECK_ERR(parse("{\"target_modules\": \"(m_+m_head+++++/+++++++++++*++++++k+++++++*)\"}", &c), MK_ERR_FORMAT,
              "stacks repetition operators");
    /* '*' and '?' keep their operand's size: (x?){n} still copies x n times */
    CHECK_ERR(parse("{\"target_modules\": \"((((((a{20})?){20})?){20})?){20}\"}", &c), MK_ERR_FORMAT, "is too complex");
    CHECK_ERR(parse("{\"target_modules\": \"(a{1000}){1000}\"}", &c), MK_ERR_FORMAT, "is too complex");
    /* stacked stars do not grow the program but regcomp's closures (seconds for 100 of them);
     * Python refuses them too ("multiple repeat") */
    CHECK_ERR(parse("{\"target_modules\": \"q_proj**\"}", &c), MK_ERR_FORMAT, "stacks repetition operators");
    CHECK_ERR(parse("{\"target_modules\": \"q{2}+\"}", &c), MK_ERR_FORMAT, "stacks repetition operators");
    CHECK_ERR(parse("{\"target_modules\": \"(|*q)\"}", &c), MK_ERR_FORMAT, "nothing to repeat");
    /* closures also grow with nesting and with the number of repetitions */
    CHECK_ERR(parse("{\"target_modules\": \"(((((((((((((((((a)*)*)*)*)*)*)*)*)*)*)*)*)*)*)*)*)*\"}", &c), MK_ERR_FORMAT,
              "is nested too deeply");
    {
        char big[400] = "{\"target_modules\": \"(";
        for (int i = 0; i < 101; i++) strcat(big, "a*");
        strcat(big, ")\"}");
        CHECK_ERR(parse(big, &c), MK_ERR_FORMAT, "more than 100 repetition operators");
    }

    CHECK_OK(parse("{\"target_modules\": \"model\\\\.layers\\\\.(1|2)+\\\\.(self_attn|mlp)\\\\.[a-z_]*proj?\", "
                   "\"exclude_modules\": \".*layers\\\\.[0-9]{1,2}\\\\.mlp\\\\.(up|gate)_proj\"}",
                   &c));
    CHECK(mk_peft_targets(&c, "model.layers.12.self_attn.q_proj"));
    CHECK(mk_peft_targets(&c, "model.layers.2.mlp.down_proj"));
    CHECK(!mk_peft_targets(&c, "model.layers.2.mlp.up_proj"));
    CHECK(!mk_peft_targets(&c, "model.layers.3.self_attn.q_proj"));
    mk_peft_config_free(&c);
}
