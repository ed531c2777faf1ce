"""What a deployment costs beyond its work, for a small project with the minimum inventory; prints the figures.

    .venv/bin/python benchmarks/deploy_overhead.py [--repeat 3] [--fleet 8] [--version 15]

A new project of three revisions (empty tables), as a team starting out would have, and an inventory with only
what docs/your-project.md asks for. Printed, side by side in one run on this machine:
- the same work by hand (pg_dump -Fc with a read-back by pg_restore --list, then alembic upgrade head) against
  deploy_migration.yml: the runbook's overhead;
- each phase of the deployment (from its record), a run with nothing to deploy, and rollback.yml back to the
  revision before;
- the CPU of ansible-playbook and everything it started (the modules run on this machine here);
- with --repeat N (3 by default): the deployment, the run with nothing to deploy and the rollback N times over,
  each figure the median (one run on this machine varies by a few seconds);
- with --fleet N: N databases deployed by one run with forks N, wall time against one database.
Targets (deploy-in-seconds issue): overhead <= 10 s, nothing to deploy <= 3 s, preflight <= 2 s, CPU <= 5 s,
fleet of 8 <= 2.5x one database.
"""

import argparse
import json
import statistics
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import sandbox  # noqa: E402

REVISION = '''"""{name}"""
from alembic import op

revision = "{revision}"
down_revision = {down}


def upgrade():
    op.execute("CREATE TABLE {name} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)")


def downgrade():
    op.execute("DROP TABLE {name}")
'''


def new_project(folder):
    """`alembic init` and three revisions, each creating an empty table."""
    subprocess.run([sys.executable, "-m", "alembic", "init", str(folder / "migrations")], cwd=folder, check=True,
                   capture_output=True)
    ini = folder / "alembic.ini"
    # The driver reads the server, login and database from libpq's PG* variables.
    ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname", "postgresql+psycopg2://"))
    down = "None"
    for number, name in enumerate(["accounts", "notes", "tags"]):
        revision = f"0000000000{number + 1:02d}"
        (folder / "migrations" / "versions" / f"{revision}_{name}.py").write_text(
            REVISION.format(name=name, revision=revision, down=down))
        down = repr(revision)


def cpu_of_children():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv, env, cwd=None):
    """(seconds, CPU seconds of the command and its children, completed process)."""
    cpu, started = cpu_of_children(), time.monotonic()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    return time.monotonic() - started, cpu_of_children() - cpu, result


def inventory(work, state, project, databases):
    """The minimum inventory for `databases`, one host each, on this machine."""
    # A backup folder per database: the backup program's lock is the folder's.
    hosts = {f"db{number}": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                             "pgops_db_name": name, "pgops_backup_dir": str(work / "backups" / name)}
             for number, name in enumerate(databases, 1)}
    common = {"pgops_db_host": state["host"], "pgops_db_port": state["port"], "pgops_db_user": state["user"],
              "pgops_db_password": state["password"], "pgops_alembic_project_dir": str(project),
              "pgops_reports_dir": str(work / "reports"),
              "pgops_pg_bin_dir": state["bindir"], "pgops_program_dir": str(work / "lib"),
              "pgops_config_dir": str(work / "etc"), "pgops_backup_os_user": os.environ.get("USER") or "root"}
    path = work / f"inventory-{len(databases)}.json"
    path.write_text(json.dumps({"databases": {"hosts": hosts, "vars": common}}))
    path.chmod(0o600)
    return path


def playbook(name, inventory_file, env, *extra):
    return timed([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory_file),
                  str(ROOT / "playbooks" / name), *extra], env, cwd=ROOT)


def create(state, *names):
    conn = psycopg2.connect(host=state["host"], port=state["port"], user=state["user"], password=state["password"],
                            dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def outcome(result):
    """ok, or the failed hosts' recap lines and the first failure's message."""
    if result.returncode == 0:
        return "ok"
    lines = result.stdout.splitlines()
    failed = [line.split()[0] for line in lines if re.search(r"(unreachable|failed)=[1-9]", line)]
    reason = next((line.split("=> ", 1)[1][:300] for line in lines if "FAILED! =>" in line), "?")
    return "FAILED on %s: %s" % (", ".join(failed) or "?", reason)


def phases(record, started_epoch):
    """{phase: seconds} from a deployment record."""
    seconds, previous = {}, started_epoch
    for phase in record.get("phases", []):
        seconds[phase["phase"]] = phase["ended_epoch"] - previous
        previous = phase["ended_epoch"]
    return seconds


def cycle(work, one, env):
    """Deploy, run again with nothing to deploy, roll back to the revision before: the figures of each."""
    started = time.time()
    deployed, deploy_cpu, result = playbook("deploy_migration.yml", one, env)
    record_path = max((work / "reports").glob("deploy-*.json"), key=os.path.getmtime)
    figures = {"deploy": deployed, "deploy_cpu": deploy_cpu, "outcome": outcome(result),
               "phases": phases(json.loads(record_path.read_text()), started)}
    figures["nothing"], figures["nothing_cpu"], result = playbook("deploy_migration.yml", one, env)
    if outcome(result) != "ok":
        figures["outcome"] += "; nothing to deploy " + outcome(result)
    figures["rollback"], figures["rollback_cpu"], result = playbook(
        "rollback.yml", one, env, "-e", f"record={record_path}", "-e", "confirm=yes")
    if outcome(result) != "ok":
        raise SystemExit("rollback.yml " + outcome(result) + ": the next cycle would start at the wrong revision")
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, default=0, help="also deploy N databases in one run (forks N)")
    parser.add_argument("--version", default="15", choices=["15", "18"])
    parser.add_argument("--repeat", type=int, default=3, help="cycles of deploy, nothing to deploy, rollback")
    args = parser.parse_args()
    name = f"bench-overhead-{os.getpid()}"
    state = sandbox.up(name, args.version, "postgres")
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            project = work / "project"
            project.mkdir()
            new_project(project)
            create(state, "by_hand", "deployed")
            env = dict(os.environ, PGHOST=state["host"], PGPORT=str(state["port"]), PGUSER=state["user"],
                       PGPASSWORD=state["password"], ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                       PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
            print(f"PostgreSQL {args.version}, {os.cpu_count()} cores; a project of 3 revisions, empty tables")

            # Both databases start at the first revision, so the run has a revision to roll back to.
            for database in ("by_hand", "deployed"):
                timed([sys.executable, "-m", "alembic", "upgrade", "000000000001"], dict(env, PGDATABASE=database),
                      cwd=project)
            by_hand = dict(env, PGDATABASE="by_hand")
            dump = work / "by_hand.dump"
            hand = sum(timed(argv, by_hand, cwd=project)[0] for argv in (
                [f"{state['bindir']}/pg_dump", "-Fc", f"--file={dump}"], [f"{state['bindir']}/pg_restore", "--list", str(dump)],
                [sys.executable, "-m", "alembic", "upgrade", "head"]))
            print(f"  by hand (dump, read-back, upgrade)   {hand:6.1f} s")

            one = inventory(work, state, project, ["deployed"])
            runs = [cycle(work, one, env) for _cycle in range(max(args.repeat, 1))]
            print(f"  (median of {len(runs)} cycles of deploy, nothing to deploy, rollback)")

            def median(key):
                return statistics.median(run[key] for run in runs)
            deployed = median("deploy")
            outcomes = "; ".join(sorted({run["outcome"] for run in runs}))
            print(f"  deploy_migration.yml                 {deployed:6.1f} s  ({outcomes}; overhead "
                  f"{deployed - hand:.1f} s; CPU {median('deploy_cpu'):.1f} s)")
            print("    phases: " + ", ".join(
                f"{name} {statistics.median(run['phases'][name] for run in runs):.1f} s" for name in runs[0]["phases"]))
            print(f"  nothing to deploy                    {median('nothing'):6.1f} s  (CPU {median('nothing_cpu'):.1f} s)")
            print(f"  rollback.yml to the revision before  {median('rollback'):6.1f} s  "
                  f"(CPU {median('rollback_cpu'):.1f} s)")

            if args.fleet:
                names = [f"fleet_{number}" for number in range(1, args.fleet + 1)]
                create(state, *names)
                many = inventory(work, state, project, names)
                wall, cpu, result = playbook("deploy_migration.yml", many, env, "--forks", str(args.fleet))
                print(f"  {args.fleet} databases, forks {args.fleet}            {wall:6.1f} s  ({outcome(result)}; "
                      f"{wall / deployed:.1f}x one database; CPU {cpu:.1f} s)")
    finally:
        sandbox.down(name)


if __name__ == "__main__":
    main()
