# bad_corpus.sh - replays tests/bad/ (made by tools/make-bad-corpus.sh): every crafted input
# is rejected with the expected exit code and one error line naming the file or key and
# the reason, and no output is left behind. Hostile checkpoints carry payloads that would
# `touch pwned` if anything ran them: that file must never appear. Under `make check` a
# sanitizer report would change the exit code and fail the case.
. "$MK_ROOT/tests/e2e/lib.sh"
for c in "$ROOT"/tests/bad/*/; do
    name=$(basename "$c")
    rm -rf "$T/case" && cp -a "$c" "$T/case" && cd "$T/case" || exit 1
    code=$(sed -n 1p expect)
    pat=$(sed -n 2p expect)
    # shellcheck disable=SC2046
    t_fail "$name" "$code" "$pat" "$MK" $(cat cmd)
    t_absent "$name leaves no output" out out.tmp
    t_absent "$name runs nothing" pwned m/pwned ad/pwned
    cd "$T" || exit 1
done
