"""The layout the README promises: the compiler sits below the host package, and the folder table is the tree."""
import ast
import re
import subprocess

from repo import ROOT


def test_codegen_imports_nothing_from_mcu_train():
    offenders = []
    for path in sorted((ROOT / "codegen").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                          if n == "mcu_train" or n.startswith("mcu_train.")]
    assert not offenders, offenders


def test_readme_folder_table_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## What is here"):]
    table = table[:table.index("\n## ")]
    listed = set(re.findall(r"^\| `([\w./-]+)/` \|", table, re.M))
    for folder in listed:
        assert (ROOT / folder).is_dir(), f"README lists {folder}/, which does not exist"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    top = {f.split("/")[0] for f in tracked if "/" in f and not f.startswith(".")}
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "mcu_train").glob("*/__init__.py")}
    assert top | packages <= listed, f"not in the README's table: {sorted(top | packages - listed)}"
