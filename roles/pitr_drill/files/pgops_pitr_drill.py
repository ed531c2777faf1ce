# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduled point-in-time recovery drill, as cron runs it on the drill host (intowork.pgops.pitr_drill role).

    pgops_pitr_drill.py --config=/etc/pgops/pitr-drill-<stanza>.json

The same procedure as the pitr_drill module (the collection's code, installed beside this program): restore the
stanza to `target_age_seconds` ago into a scratch server of its own, prove recovery stopped at the target, count
the rows, remove the copy. Prints the report as one line; exits 1 (cron mails the output) when the drill failed or
its RTO is over the target.
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import types

PACKAGE = "ansible_collections.intowork.pgops.plugins.module_utils"
# Installed beside this program: file name -> the collection's module it is.
BESIDE = (("pgops_connection.py", "_connection"), ("pgops_restore_point.py", "_restore_point"),
          ("pgops_scratch_server.py", "_scratch_server"), ("pgops_pitr_drill_core.py", "_pitr_drill"))


def load_collection_code():
    """The collection's modules from beside this program, under their own names, so that their imports of each
    other resolve without a collection installed."""
    here = os.path.dirname(os.path.abspath(__file__))
    parts = PACKAGE.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = []
            sys.modules[name] = package
    loaded = {}
    for file_name, module_name in BESIDE:
        path = os.path.join(here, file_name)
        if not os.path.isfile(path):
            raise SystemExit("%s is missing: run playbooks/pitr_drill_cron.yml again to install it" % path)
        spec = importlib.util.spec_from_file_location("%s.%s" % (PACKAGE, module_name), path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        loaded[module_name] = module
    return loaded


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    with open(args.config) as config_file:
        config = json.load(config_file)
    code = load_collection_code()
    drill = code["_pitr_drill"]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    params = dict(config["drill"], path=os.path.join(config["folder"], "%s-%s" % (config["drill"]["stanza"], stamp)),
                  state="present", target_time="")
    label = "PITR drill of stanza %s" % params["stanza"]
    try:
        report = drill.drill(params, False)
    except code["_connection"].PgopsError as error:
        print("%s failed: %s" % (label, error))
        return 1
    finally:
        # A failed drill removed its copy itself; a good one leaves it running until here.
        try:
            drill.remove(drill.scratch_of(params["path"]), False)
            removed = "the scratch copy was removed"
        except code["_connection"].PgopsError as error:
            removed = "the scratch copy was NOT removed: %s" % error
    print("%s: %s; %s." % (label, drill.report_line(report, config["rto_target_seconds"]), removed))
    if not removed.endswith("removed"):
        return 1
    if report["rto_seconds"] > config["rto_target_seconds"]:
        print("%s: RTO %s s is over the %s s target" % (label, report["rto_seconds"], config["rto_target_seconds"]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
