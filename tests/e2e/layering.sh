# layering.sh - the include rule of docs/architecture.md holds: every #include "..." of a
# layer names its own folder or a layer below it, and the files' include graph has no cycle.
#   core <- model <- formats, merge, quant, lora, nn <- eval, train <- cli
. "$MK_ROOT/tests/e2e/lib.sh"

cd "$ROOT" || exit 1

# folders a layer may include besides its own
allowed() {
    case "$1" in
        core) echo "" ;;
        model) echo "core" ;;
        formats | merge | quant | lora | nn) echo "core model" ;;
        eval | train) echo "core model nn" ;;
        *) echo "*" ;;
    esac
}

# check_tree DIR EDGES: prints each include that breaks the rule; writes "file target" edges
check_tree() {
    (
        cd "$1" || exit 1
        for f in $(find core model formats merge quant lora nn eval train cli -name '*.[ch]' 2>/dev/null | LC_ALL=C sort); do
            layer=${f%%/*}
            ok_layers=$(allowed "$layer")
            dir=$(dirname "$f")
            for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
                target=$(cd "$dir" && realpath -m --relative-to="$1" "$inc")
                echo "$f $target" >>"$2"
                tl=${target%%/*}
                [ "$tl" = "$layer" ] && continue
                [ "$ok_layers" = "*" ] && continue
                case " $ok_layers " in
                    *" $tl "*) ;;
                    *) printf '%s->%s ' "$f" "$target" ;;
                esac
            done
        done
    )
}

edges="$T/edges"
: >"$edges"
bad=$(check_tree "$ROOT" "$edges")
if [ -z "$bad" ]; then ok "every layer includes only its own folder and the layers below it"
else notok "include rule" "$bad"; fi

if tsort "$edges" >/dev/null 2>"$T/.cyc"; then ok "the include graph has no cycle ($(wc -l <"$edges") includes)"
else notok "no include cycle" "$(head -c 600 "$T/.cyc")"; fi

# the check catches a violation: a quant/ file including merge/, and a cycle
mkdir -p "$T/plant/quant" "$T/plant/merge"
printf '#include "../merge/plan.h"\n' >"$T/plant/quant/x.c"
printf '#include "b.h"\n' >"$T/plant/merge/a.h"
printf '#include "a.h"\n' >"$T/plant/merge/b.h"
: >"$T/plant-edges"
planted=$(check_tree "$T/plant" "$T/plant-edges")
if [ "$planted" = "quant/x.c->merge/plan.h " ]; then ok "a planted quant -> merge include is reported"
else notok "a planted quant -> merge include is reported" "got '$planted'"; fi
if tsort "$T/plant-edges" >/dev/null 2>&1; then notok "a planted include cycle is reported" "tsort found none"
else ok "a planted include cycle is reported"; fi

# no file over 1,200 lines, no cli function over 80 lines
long=$(find core model formats merge quant lora nn eval train cli -name '*.[ch]' 2>/dev/null | xargs wc -l | awk '$2 != "total" && $1 > 1200 {print $2 " (" $1 ")"}')
if [ -z "$long" ]; then ok "no source file over 1,200 lines"; else notok "no source file over 1,200 lines" "$long"; fi
longfn=$(for f in cli/*.c; do
    awk '/^[A-Za-z_].*\(/ && !/;$/ { cand = $0 } /^\{/ { start = FNR; name = cand }
         /^\}/ { if (start && FNR - start + 1 > 80) printf "%s:%d %s; ", FILENAME, start, substr(name, 1, 60); start = 0 }' "$f"
done)
if [ -z "$longfn" ]; then ok "no cli/ function over 80 lines"; else notok "no cli/ function over 80 lines" "$longfn"; fi

# architecture knowledge lives in model/: no embedding or lm_head name heuristics elsewhere
heur=$(grep -nE 'strstr\([^)]*"(embed|lm_head|wte|wpe)' $(find formats merge quant lora nn eval train cli -name '*.c' 2>/dev/null) || true)
if [ -z "$heur" ]; then ok "no embedding / lm_head name heuristic outside model/"; else notok "heuristics outside model/" "$heur"; fi
