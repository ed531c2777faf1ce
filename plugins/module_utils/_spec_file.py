# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Reading the application's spec files (index strategy, integrity rules, critical queries)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError

try:
    import yaml
    HAS_YAML = True
except ImportError:
    HAS_YAML = False


def load_yaml_mapping(path, option):
    """The YAML mapping in `path`; PgopsError naming the option and the file for anything else."""
    if not HAS_YAML:
        raise PgopsError("%s needs PyYAML on the managed host's Python: pip install PyYAML" % option)
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except (IOError, OSError) as error:
        raise PgopsError("cannot read %s %s: %s" % (option, path, error.strerror or error))
    except yaml.YAMLError as error:
        raise PgopsError("%s %s is not valid YAML: %s" % (option, path, " ".join(str(error).split())))
    if not isinstance(data, dict):
        raise PgopsError("%s %s must hold a YAML mapping" % (option, path))
    return data


def one_sql_piece(text, label, what="expression"):
    """`text` as one SQL expression (or one statement, with at most a trailing ';'), else PgopsError.

    Spec files put SQL inside the read-only transaction the checks run in: a ';' would end that statement
    and let the rest run as statements of their own (COMMIT, then writes), and a comment could hide what
    follows it. Both are refused wherever they appear, string literals included.
    """
    if not isinstance(text, str) or not text.strip():
        raise PgopsError("%s must be a non-empty SQL %s" % (label, what))
    body = text.strip()
    if what == "statement":
        body = body.rstrip(";").rstrip()
    for token, name in ((";", "';'"), ("--", "a '--' comment"), ("/*", "a '/*' comment")):
        if token in body:
            raise PgopsError("%s holds %s: it must be one SQL %s, with no ';' or comment anywhere (not even in "
                             "a string literal); got %r" % (label, name, what, text if len(text) < 120 else text[:117] + "..."))
    return body
