"""The tests' own layout: what several test modules share lives in ``tests/helpers``, never in a test module.

A test module imported by another runs its module-level code (and collects nothing new) in
a place nobody looks for it, and ties two test files together so that neither can move alone.
"""

import grimp


def test_no_test_module_imports_another_test_module():
    graph = grimp.build_graph("tests", cache_dir=None)
    imported = {
        f"{importer} imports {module}"
        for module in graph.modules
        if module.rpartition(".")[2].startswith("test_")
        for importer in graph.find_modules_that_directly_import(module)
    }
    assert not imported, "move what is shared into tests/helpers: " + "; ".join(sorted(imported))
