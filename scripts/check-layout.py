#!/usr/bin/env python3
"""The layout rules CI enforces (issue 14), beside fmt and clippy:

1. no non-test .rs file over MAX_LINES lines (counted before its first `#[cfg(test)]`);
2. no `allow(clippy::too_many_arguments)` anywhere (a context struct instead);
3. no import cycle between the controller's top-level modules (`use crate::a` in module b and
   `use crate::b` in module a, or a longer loop): data flows one way.

Prints each breach with what to do, and exits 1 if there is any. Standard library only.
"""

import pathlib
import re
import sys

MAX_LINES = 700
ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["proto", "common", "simulator", "agent", "controller", "macos", "tests"]
# Test-only trees: their files are tests as a whole.
TEST_DIRS = {"tests", "benches", "examples"}


def rust_files():
    for crate in CRATES:
        for path in sorted((ROOT / crate).rglob("*.rs")):
            if "target" in path.parts:
                continue
            yield path


def is_test_file(path):
    rel = path.relative_to(ROOT).parts
    # <crate>/tests/..., <crate>/benches/..., <crate>/examples/... (but tests/src is the harness)
    return len(rel) > 1 and rel[1] in TEST_DIRS


def lines_before_tests(text):
    n = 0
    for line in text.splitlines():
        if line.strip().startswith("#[cfg(test)]"):
            break
        n += 1
    return n


def check_sizes(problems):
    for path in rust_files():
        if is_test_file(path):
            continue
        n = lines_before_tests(path.read_text(encoding="utf-8"))
        if n > MAX_LINES:
            problems.append(
                f"{path.relative_to(ROOT)}: {n} lines before its tests (at most {MAX_LINES}): "
                "split it by concern into a folder of modules"
            )


def check_allows(problems):
    pattern = re.compile(r"allow\(\s*clippy::too_many_arguments")
    for path in rust_files():
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                problems.append(
                    f"{path.relative_to(ROOT)}:{i}: allow(clippy::too_many_arguments): "
                    "pass a context struct instead"
                )


def controller_imports():
    """{top-level module: {top-level modules it uses}} for controller/src."""
    src = ROOT / "controller" / "src"
    modules = {}
    for path in src.rglob("*.rs"):
        rel = path.relative_to(src).parts
        if rel in (("lib.rs",), ("main.rs",)):
            continue
        top = rel[0][:-3] if rel[0].endswith(".rs") else rel[0]
        text = path.read_text(encoding="utf-8")
        # Only non-test code counts: tests may reach anywhere.
        text = "\n".join(text.splitlines()[: lines_before_tests(text)])
        used = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        modules.setdefault(top, set()).update(u for u in used if u != top)
    known = set(modules)
    return {m: {u for u in used if u in known} for m, used in modules.items()}


def check_cycles(problems):
    graph = controller_imports()
    seen_cycles = set()

    def visit(node, stack, on_stack):
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_stack:
                cycle = stack[stack.index(nxt) :] + [nxt]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    problems.append(
                        "controller import cycle: "
                        + " -> ".join(cycle)
                        + ": move what both need into the lower module (plan < fleet < run < "
                        "aggregate < sinks), so data flows one way"
                    )
            elif len(stack) < len(graph) + 1:
                visit(nxt, stack + [nxt], on_stack | {nxt})

    for start in sorted(graph):
        visit(start, [start], {start})


def main():
    problems = []
    check_sizes(problems)
    check_allows(problems)
    check_cycles(problems)
    for p in problems:
        print(f"layout: {p}")
    if problems:
        print(f"layout: {len(problems)} problem(s)")
        return 1
    print("layout: file sizes, lint allowances and controller imports are in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
