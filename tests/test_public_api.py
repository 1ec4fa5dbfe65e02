"""The top-level API: every advertised name resolves, and `import alphadrive_trl` stays light."""

from __future__ import annotations

import subprocess
import sys

import alphadrive_trl


def test_every_public_name_resolves_to_its_module_object():
    for name in alphadrive_trl.__all__:
        value = getattr(alphadrive_trl, name)
        if name != "__version__":
            module = __import__(f"alphadrive_trl.{alphadrive_trl._PUBLIC_API[name]}", fromlist=[name])
            assert value is getattr(module, name), name


def test_importing_the_package_does_not_import_the_training_stack():
    code = "import sys, alphadrive_trl; print(sorted({'torch', 'transformers', 'trl'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
