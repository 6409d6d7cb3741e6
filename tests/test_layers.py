"""``common`` is layered (README "Layout"): each sub-package imports only the ones below it, so the folder names
say what depends on what, and no method knowledge reaches the shared code."""
import ast
import os

from conftest import REPO_ROOT

# bottom to top; packages on one level do not import each other
LEVELS = {"core": 0, "data": 1, "metrics": 1, "networks": 1, "evaluation": 2, "training": 3, "deploy": 4, "cli": 5}
METHOD_PACKAGES = ("rd4ad", "kdad", "orthoad", "efficientad")


def imports_of(path, module):
    """The absolute names of the modules ``path`` (module ``module``) imports."""
    parts = module.split(".")
    package = parts if path.endswith("__init__.py") else parts[:-1]
    names = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def test_common_imports_only_go_downwards_and_know_no_method():
    wrong = []
    root = os.path.join(REPO_ROOT, "common")
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            layer = module.split(".")[1] if module.count(".") else None
            for imported in imports_of(path, module):
                parts = imported.split(".")
                if parts[0] in METHOD_PACKAGES:
                    wrong.append(f"{module} imports the method package {imported}")
                if layer in LEVELS and parts[0] == "common" and len(parts) > 1 and parts[1] in LEVELS:
                    if parts[1] != layer and LEVELS[parts[1]] >= LEVELS[layer]:
                        wrong.append(f"{module} ({layer}) imports {imported} ({parts[1]})")
    assert wrong == []
    assert sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "__init__.py"))) == sorted(
        LEVELS)


def test_every_sub_package_says_what_it_is():
    import importlib

    for package in LEVELS:
        doc = importlib.import_module(f"common.{package}").__doc__ or ""
        assert len(doc.split()) > 15, package
