# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest's view of a stanza for Prometheus (node_exporter's textfile collector), as cron runs it.

    pgops_pgbackrest_metrics.py --config=FILE --stanza=NAME --output=DIR/pgops_pgbackrest_NAME.prom \\
        --max-age full=SECONDS --max-age diff=SECONDS [--pgbackrest=/usr/bin/pgbackrest]

Written by the intowork.pgops.pgbackrest role. Reads `pgbackrest info`, writes the file whole (a temporary name,
then a rename): the newest backup of each type, the age each may reach (the schedule's, for the alerts), the
earliest time the repository can recover to, the repository's size, the stanza's status. Exits 1 (cron mails
it) when pgBackRest cannot be read; the metrics file then keeps its last content, whose timestamp ages.
"""

import argparse
import json
import os
import subprocess
import sys
import time

# The collection's reading of `pgbackrest info`, installed beside this program: one implementation.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgops_pgbackrest_info import TYPES, newest_per_type, recoverable_since, repository_bytes  # noqa: E402


def metric_lines(stanza, info, max_ages, now):
    backups = info.get("backup", [])
    label = 'stanza="%s"' % stanza
    lines = []

    def gauge(name, help_text, samples):
        lines.extend(["# HELP pgops_pgbackrest_%s %s" % (name, help_text), "# TYPE pgops_pgbackrest_%s gauge" % name])
        lines.extend("pgops_pgbackrest_%s{%s} %s" % (name, labels, value) for labels, value in samples)

    newest = newest_per_type(backups)
    gauge("backup_last_timestamp_seconds", "End of the newest backup that meets this type's schedule.",
          [('%s,type="%s"' % (label, kind), newest[kind]["timestamp"]["stop"]) for kind in TYPES if kind in newest])
    gauge("backup_max_age_seconds", "The age the newest backup of this type may reach (its schedule).",
          [('%s,type="%s"' % (label, kind), age) for kind, age in sorted(max_ages.items())])
    if backups:
        gauge("recoverable_since_timestamp_seconds", "Start of the oldest backup: the earliest time a recovery reaches.",
              [(label, recoverable_since(backups))])
    gauge("repository_size_bytes", "The stanza's backups in the repository (compressed).",
          [(label, repository_bytes(backups))])
    gauge("status", "pgBackRest's status code of the stanza (0: ok, 2: no valid backups).",
          [(label, info["status"]["code"])])
    gauge("metrics_timestamp_seconds", "When these figures were read.", [(label, round(now, 3))])
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--stanza", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--pgbackrest", default="/usr/bin/pgbackrest")
    parser.add_argument("--max-age", action="append", default=[], metavar="TYPE=SECONDS")
    args = parser.parse_args(argv)
    max_ages = dict((kind, int(seconds)) for kind, seconds in (item.split("=", 1) for item in args.max_age))
    ran = subprocess.run([args.pgbackrest, "--config=%s" % args.config, "--stanza=%s" % args.stanza, "--output=json",
                          "info"], capture_output=True, text=True, check=False)
    try:
        info = json.loads(ran.stdout)[0]
    except (ValueError, IndexError):
        lines = [line.strip() for line in (ran.stderr or ran.stdout).splitlines() if line.strip()]
        print("pgbackrest info of stanza %s failed: %s" % (args.stanza, lines[-1] if lines else "no output"))
        return 1
    partial = "%s.%d.partial" % (args.output, os.getpid())
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write("\n".join(metric_lines(args.stanza, info, max_ages, time.time())) + "\n")
    os.chmod(partial, 0o644)
    os.rename(partial, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
