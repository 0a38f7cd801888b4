"""The code passes the linter configured in pyproject.toml (ruff: pycodestyle errors and
warnings, pyflakes; 100 columns, 2-space indents)."""
import subprocess
import sys

from jaxdet.runtime import REPO_ROOT


def test_ruff_is_clean():
  # ruff is a test dependency: pip install -e ".[test]" -c constraints.txt
  result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", REPO_ROOT],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
