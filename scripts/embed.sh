#!/bin/sh
# embed.sh NAME FILE: print a C header holding FILE as a string constant NAME
# and its length NAME_len. Every byte becomes an octal escape, so any content
# (quotes, backslashes, UTF-8) survives and the output needs only od and sed.
set -eu
name=$1
file=$2
printf '/* Generated from %s by scripts/embed.sh. */\n' "$file"
printf '#include <stddef.h>\n\n'
printf 'static const char %s[] __attribute__((unused)) =\n' "$name"
od -An -v -to1 "$file" |
	sed -e 's/ \([0-7][0-7][0-7]\)/\\\1/g' -e 's/^/\t"/' -e 's/$/"/'
printf '\t;\n'
printf 'static const size_t %s_len __attribute__((unused)) =\n' "$name"
printf '\tsizeof(%s) - 1;\n' "$name"
