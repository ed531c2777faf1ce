"""Stand-in for the get-pip.py bootstrap that ansible-test downloads from a host this network cannot reach.

ansible-test runs it inside each new virtual environment with pip's options and the packages to
install (pip==X). It installs pip from the interpreter's bundled wheel (ensurepip), then lets that
pip install what was asked from the package index.
"""

import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"]
                      + [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY])
