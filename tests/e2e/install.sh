# install.sh - `make install-files` (what `make install` runs once the program is built) into a
# scratch DESTDIR: the program and its links, a man page per command (each renders, and is
# well-formed roff), bash and zsh completion that are valid and know every command and
# subcommand; then `make uninstall` removes exactly that and leaves nothing behind.
. "$MK_ROOT/tests/e2e/lib.sh"
D=$T/dest
P=/usr/local
mkargs() { make -C "$ROOT" --no-print-directory "$@" MK_PROG="$MK" BUILD="$T/build" DESTDIR="$D" PREFIX="$P"; }
mkargs install-files >make.log 2>&1 || { notok "make install-files" "$(tail -n 5 make.log)"; exit 0; }
ok "make install-files into DESTDIR"

# ---- the program ------------------------------------------------------------------------------
[ -x "$D$P/bin/mergekit-c" ] && cmp -s "$D$P/bin/mergekit-c" "$MK" && ok "bin/mergekit-c installed" || notok "bin/mergekit-c" "missing or different"
for a in quantize mergekit-yaml; do
    [ "$(readlink "$D$P/bin/$a")" = mergekit-c ] && ok "bin/$a -> mergekit-c" || notok "bin/$a" "$(ls -l "$D$P/bin/$a" 2>&1)"
done
"$D$P/bin/mergekit-yaml" --help | head -n 1 | grep -q "^usage: mergekit-yaml" && ok "the installed mergekit-yaml runs as itself" ||
    notok "installed mergekit-yaml" "$("$D$P/bin/mergekit-yaml" --help 2>&1 | head -n 1)"

# ---- man pages ----------------------------------------------------------------------------------
"$MK" help --man-pages >pages.txt
"$MK" help --commands >commands.txt
np=$(grep -c . pages.txt)
[ "$np" -ge 18 ] && ok "$np man pages listed" || notok "man pages" "$(cat pages.txt)"
while read -r c; do # every command (every subcommand for lora) has its page
    case $c in lora) continue ;; esac
    grep -qx "mergekit-c-$(echo "$c" | tr ' ' -)" pages.txt || echo "$c"
done <commands.txt >nopage.txt
[ -s nopage.txt ] && notok "a page per command" "$(cat nopage.txt | tr '\n' ' ')" || ok "a man page per command and subcommand"
bad=
while read -r p; do
    f="$D$P/share/man/man1/$p.1"
    [ -f "$f" ] || { bad="$bad $p(missing)"; continue; }
    head -n 3 "$f" | grep -q '^\.TH ' && grep -q '^\.SH NAME' "$f" && grep -q '^\.SH SYNOPSIS' "$f" || bad="$bad $p(sections)"
    if command -v groff >/dev/null 2>&1; then
        w=$(groff -ww -z -man "$f" 2>&1) && [ -z "$w" ] || bad="$bad $p(groff: $w)"
    fi
    if command -v man >/dev/null 2>&1; then
        MANWIDTH=100 man -l "$f" 2>/dev/null | grep -q "SYNOPSIS" || bad="$bad $p(man -l)"
    fi
done <pages.txt
[ -z "$bad" ] && ok "every page is well-formed roff$(command -v man >/dev/null 2>&1 && echo ' and man -l renders it')" || notok "man pages" "$bad"
[ "$(ls "$D$P/share/man/man1" | wc -l)" -eq "$np" ] && ok "no other files in man1" || notok "man1" "$(ls "$D$P/share/man/man1")"
if command -v man >/dev/null 2>&1; then
    MANWIDTH=200 man -l "$D$P/share/man/man1/mergekit-c-merge.1" 2>/dev/null >merge.txt
    # the page carries every option of the table (no drift): each --option of merge --help
    "$MK" merge --help | grep -o -- '--[a-z][a-z-]*' | sort -u | while read -r o; do
        grep -q -- "$o" merge.txt || echo "$o"
    done >missing.txt
    [ -s missing.txt ] && notok "the merge page lists every option" "$(cat missing.txt | tr '\n' ' ')" || ok "the merge page lists every option of merge --help"
    MANWIDTH=200 man -l "$D$P/share/man/man1/mergekit-yaml.1" 2>/dev/null | grep -q -- "--\[no-\]copy-tokenizer" &&
        ok "mergekit-yaml(1) has mergekit-yaml's options" || notok "mergekit-yaml(1)" "no --[no-]copy-tokenizer"
else
    echo "skip - man -l rendering: man is not installed"
fi

# ---- completion ------------------------------------------------------------------------------------
B=$D$P/share/bash-completion/completions
bash -n "$B/mergekit-c" && ok "bash completion is valid bash" || notok "bash -n" "$(bash -n "$B/mergekit-c" 2>&1)"
for a in quantize mergekit-yaml; do [ "$(readlink "$B/$a")" = mergekit-c ] || notok "completion link $a" "missing"; done
ok "bash completion links for quantize and mergekit-yaml"
while read -r c; do grep -q "\b${c##* }\b" "$B/mergekit-c" || echo "$c"; done <commands.txt >nocomp.txt
[ -s nocomp.txt ] && notok "bash completion lists every command" "$(cat nocomp.txt)" || ok "bash completion lists every command and subcommand"
cat >comp.bash <<END
. "$B/mergekit-c"
t() { COMP_WORDS=("\$@"); COMP_CWORD=\$((\${#COMP_WORDS[@]} - 1)); _mergekit_c; echo "\${COMPREPLY[*]}"; }
t mergekit-c mer
t mergekit-c lora ex
t mergekit-c merge r.yaml o --out-sh
t mergekit-c lora extract b f o --ra
t mergekit-yaml r.yaml o --copy-tok
t quantize in out --per
t mergekit-c r.yaml o --on-nonfinite ""
END
mkdir empty && (cd empty && bash ../comp.bash) >comp.txt 2>&1 # no files to offer
want="merge
extract
--out-shard-size
--rank
--copy-tokenizer
--per-tensor
error warn"
[ "$(cat comp.txt)" = "$want" ] && ok "bash completes commands, subcommands, options (per program) and choices" ||
    notok "bash completion" "$(cat comp.txt | tr '\n' '|')"
Z=$D$P/share/zsh/site-functions/_mergekit-c
head -n 1 "$Z" | grep -q '^#compdef mergekit-c quantize mergekit-yaml' && ok "zsh completion: #compdef for the three programs" || notok "zsh #compdef" "$(head -n 1 "$Z")"
while read -r c; do grep -q "\b${c##* }\b" "$Z" || echo "$c"; done <commands.txt >nocomp.txt
[ -s nocomp.txt ] && notok "zsh completion lists every command" "$(cat nocomp.txt)" || ok "zsh completion lists every command and subcommand"
if command -v zsh >/dev/null 2>&1; then
    zsh -n "$Z" && ok "zsh completion is valid zsh" || notok "zsh -n" "$(zsh -n "$Z" 2>&1)"
else
    echo "skip - zsh -n: zsh is not installed"
fi

# ---- uninstall ------------------------------------------------------------------------------------
mkargs uninstall >make.log 2>&1 || notok "make uninstall" "$(tail -n 5 make.log)"
left=$(find "$D" -type f -o -type l)
[ -z "$left" ] && ok "make uninstall removes every installed file" || notok "make uninstall" "left: $left"
# and only those: a file of someone else's in the same folders stays
mkargs install-files >/dev/null 2>&1
echo keep >"$D$P/share/man/man1/other.1"
echo keep >"$D$P/bin/other"
mkargs uninstall >/dev/null 2>&1
[ -f "$D$P/share/man/man1/other.1" ] && [ -f "$D$P/bin/other" ] && [ "$(find "$D" -type f -o -type l | wc -l)" -eq 2 ] &&
    ok "make uninstall leaves other files alone" || notok "uninstall too much" "$(find "$D" -type f -o -type l)"
