# docs.sh - the README stays true to the code: every command, every merge option and every
# merge method the program knows is documented there, and every recipe in recipes/ is
# valid (a dry run on the quick-start models).
. "$MK_ROOT/tests/e2e/lib.sh"
readme="$ROOT/README.md"
"$MK" --help >help.txt
for c in $(sed -n '/^commands:/,/^$/p' help.txt | awk 'NF {print $1}' | grep -v commands:); do
    grep -q "mergekit-c $c\|\`$c\`" "$readme" || echo "$c" >>missing.txt
done
[ -s missing.txt ] && notok "README documents every command" "$(cat missing.txt)" || ok "README documents every command"
rm -f missing.txt
"$MK" merge --help | sed 's/--\[no-\]/--/g' | grep -o -- '--[a-z][a-z-]*' | sort -u | while read -r o; do
    case "$o" in --help|--quiet|--verbose|--threads|--json|--chunk) continue ;; esac
    grep -q -- "\`$o" "$readme" || echo "$o"
done >missing.txt
[ -s missing.txt ] && notok "README documents every merge option" "$(cat missing.txt | tr '\n' ' ')" || ok "README documents every merge option"
"$MK" methods --json | grep -o '"name": "[a-z_]*", "supported"' | cut -d'"' -f4 | while read -r m; do
    grep -q "\`$m\`" "$readme" || echo "$m"
done >missing.txt
[ -s missing.txt ] && notok "README documents every method" "$(cat missing.txt | tr '\n' ' ')" || ok "README documents every method"
# the command table's subcommands (help --commands, man pages, completion) are the ones the
# command itself knows (lora --help lists its own table)
for c in $("$MK" help --commands | awk 'NF == 2 {print $1}' | sort -u); do
    want=$("$MK" "$c" --help | sed -n '/^commands:/,/^$/p' | awk 'NF && $1 != "commands:" {print $1}' | tr '\n' ' ')
    got=$("$MK" help --commands | awk -v c="$c" '$1 == c && NF == 2 {print $2}' | tr '\n' ' ')
    [ "$want" = "$got" ] && ok "$c: help --commands lists its subcommands ($got)" || notok "$c subcommands" "table: $got; $c --help: $want"
done
