"""Groups a flat `perf report --sort dso,symbol` by what the code does.

Reads the report on stdin; prints each group's share of the samples, largest first.
The patterns are matched in order against "dso symbol"; the first match wins.
"""
import re
import sys

GROUPS = [
    ("kernel (syscalls, scheduler, TCP)", r"\[kernel"),
    ("serde_json (parse/serialize)", r"serde_json|serde::|ryu|itoa"),
    ("sha2 (prompt hash)", r"sha2|Sha256|sha256"),
    ("ulid / rand", r"ulid|rand::|rand_core|chacha"),
    ("tracing", r"tracing"),
    ("reqwest / hyper client", r"reqwest|hyper_util::client|hyper::client|proto::h1::role::Client"),
    ("hyper server / axum / tower", r"hyper|axum|tower|matchit"),
    ("tokio runtime", r"tokio|mio::"),
    ("malloc / free", r"malloc|free|_int_|cfree|realloc|tcache"),
    ("memcpy / memmove", r"memmove|memcpy|memset|memcmp"),
    ("http / bytes / headers", r"http::|bytes::|HeaderMap"),
    ("triage (own code)", r"triage::"),
    ("other libc / vdso", r"libc|vdso|libm"),
]

totals = {name: 0.0 for name, _ in GROUPS}
other = 0.0
other_top = []
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(.*)", line)
    if not m:
        continue
    pct, rest = float(m.group(1)), m.group(2)
    for name, pat in GROUPS:
        if re.search(pat, rest):
            totals[name] += pct
            break
    else:
        other += pct
        other_top.append((pct, rest.strip()))
rows = sorted(totals.items(), key=lambda kv: -kv[1]) + [("other", other)]
for name, pct in rows:
    print(f"{pct:6.2f}%  {name}")
print("largest 'other' symbols:")
for pct, rest in sorted(other_top, reverse=True)[:12]:
    print(f"  {pct:5.2f}%  {rest[:140]}")
