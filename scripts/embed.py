#!/usr/bin/env python3
"""Build step: a text file as a C string, for files ncghl serves itself.

usage: embed.py INPUT OUTPUT.c SYMBOL VERSION
Writes `const char SYMBOL[]` (NUL-terminated) and `const size_t SYMBOL_len`;
@NCGHL_VERSION@ in the text becomes VERSION. The input must be valid JSON
when it ends in .json, so a broken document fails the build, not a client."""
import json
import sys


def main():
    src, out, symbol, version = sys.argv[1:5]
    text = open(src, encoding="utf-8").read().replace("@NCGHL_VERSION@", version)
    if src.endswith(".json"):
        text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    data = text.encode("utf-8")
    lines = ['/* Generated from %s by scripts/embed.py: edit that file. */' % src.split("/")[-1],
             "#include <stddef.h>", "", "const char %s[] = {" % symbol]
    for i in range(0, len(data), 16):
        lines.append("  " + ", ".join(str(b) for b in data[i:i + 16]) + ",")
    lines += ["  0", "};", "const size_t %s_len = %d;" % (symbol, len(data)), ""]
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
