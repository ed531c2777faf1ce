"""The generator loads identical data on every run, and plants exactly the defects asked for."""

import subprocess
import sys

from conftest import BASELINE, PROJECT_DIR, alembic, libpq_env, load_reference_data, query

TABLE_DIGEST = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} t"


def digests(params):
    return {table: query(params, TABLE_DIGEST.format(table))[0][0]
            for table in ("users", "jobs", "job_applications", "sessions")}


def test_two_loads_are_identical_and_consistent(database):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.01)
    first = digests(database)
    counts = dict(query(database, "SELECT 'jobs', count(*) FROM jobs UNION ALL "
                                  "SELECT 'applications', count(*) FROM job_applications"))
    assert counts == {"jobs": 1000, "applications": 10000}
    orphans = query(database, "SELECT count(*) FROM job_applications a WHERE NOT EXISTS "
                              "(SELECT 1 FROM candidates c WHERE c.id = a.candidate_id)")[0][0]
    duplicates = query(database, "SELECT count(*) FROM (SELECT 1 FROM job_applications "
                                 "GROUP BY candidate_id, job_id HAVING count(*) > 1) d")[0][0]
    assert (orphans, duplicates) == (0, 0)

    subprocess.run([sys.executable, str(PROJECT_DIR / "generate_data.py"), "--scale", "0.01", "--replace"],
                   env=libpq_env(database), check=True, capture_output=True)
    assert digests(database) == first


def test_planted_defects_are_counted(database):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.01, defects=7)
    orphans = query(database, "SELECT count(*) FROM job_applications a WHERE NOT EXISTS "
                              "(SELECT 1 FROM candidates c WHERE c.id = a.candidate_id)")[0][0]
    duplicates = query(database, "SELECT count(*) FROM (SELECT 1 FROM job_applications "
                                 "GROUP BY candidate_id, job_id HAVING count(*) > 1) d")[0][0]
    bad_salary = query(database, "SELECT count(*) FROM jobs WHERE salary_min > salary_max")[0][0]
    assert (orphans, duplicates, bad_salary) == (7, 7, 7)


def test_refuses_to_load_over_existing_rows(database):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.001)
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "generate_data.py"), "--scale", "0.001"],
                            env=libpq_env(database), capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "tables already hold rows" in result.stderr and "--replace" in result.stderr
