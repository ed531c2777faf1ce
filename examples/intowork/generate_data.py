"""Deterministic INTOWORK reference data, generated inside the server.

    python examples/intowork/generate_data.py [--scale 1.0] [--replace] [--plant-defects N]

Scale 1.0 is 100,000 jobs, 50,000 candidates and 1,000,000 job_applications, with users, companies,
employers, accounts, sessions and tokens in proportion. Every value is a function of the row number,
so two runs at one scale give identical tables. Connection: DATABASE_URL or the PG* variables.

--plant-defects N adds N of each integrity defect (orphaned applications, duplicate applications,
salary_min > salary_max) for the verification tests; it needs the baseline schema, since the later
revisions' constraints forbid those rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import psycopg2

# Application order: parents before children.
TABLES = ["users", "companies", "employers", "candidates", "accounts", "sessions",
          "verification_tokens", "password_reset_tokens", "jobs", "job_applications"]
EPOCH = "2026-01-01 00:00:00+00"


@dataclass(frozen=True)
class Sizes:
    jobs: int
    candidates: int
    applications: int
    employers: int
    companies: int
    verification_tokens: int
    password_reset_tokens: int

    @classmethod
    def at(cls, scale: float) -> "Sizes":
        def n(base: int) -> int:
            return max(1, int(base * scale))
        sizes = cls(jobs=n(100_000), candidates=n(50_000), applications=n(1_000_000), employers=n(10_000),
                    companies=n(5_000), verification_tokens=n(10_000), password_reset_tokens=n(5_000))
        if sizes.applications > sizes.candidates * sizes.jobs:
            raise SystemExit(f"scale {scale} is too small for unique (candidate, job) pairs")
        return sizes

    @property
    def users(self) -> int:
        return self.candidates + self.employers


# A cheap integer mix (Knuth's multiplicative hash) makes values look random yet stay deterministic.
MIX = "((({x})::bigint * 2654435761) % 4294967296)"


def mix(expr: str) -> str:
    return MIX.format(x=expr)


def pick(options: list[str], expr: str) -> str:
    values = ",".join("'" + o + "'" for o in options)
    return f"(ARRAY[{values}])[1 + ({mix(expr)} % {len(options)})]"


def statements(s: Sizes) -> dict[str, str]:
    """One INSERT ... SELECT per table; ids are explicit so foreign keys are known in advance."""
    employer_user = f"{s.candidates} + e"
    return {
        "users": f"""
            INSERT INTO users (id, email, name, role, email_verified, password_hash, created_at, updated_at)
            SELECT i, 'user' || i || '@intowork.example', 'User ' || i,
                   CASE WHEN i <= {s.candidates} THEN 'candidate' ELSE 'employer' END,
                   CASE WHEN {mix('i')} % 10 < 9 THEN timestamptz '{EPOCH}' + (i % 365) * interval '1 day' END,
                   md5('pw' || i),
                   timestamptz '{EPOCH}' - ({mix('i')} % 730) * interval '1 day',
                   timestamptz '{EPOCH}'
              FROM generate_series(1, {s.users}) AS i""",
        "companies": f"""
            INSERT INTO companies (id, name, industry, size, location, website, created_at)
            SELECT i, 'Company ' || i,
                   {pick(['software', 'finance', 'health', 'retail', 'logistics', 'education'], 'i')},
                   {pick(['1-10', '11-50', '51-200', '201-1000', '1000+'], 'i + 1')},
                   {pick(['Berlin', 'Paris', 'London', 'Madrid', 'Warsaw', 'Lisbon', 'Remote'], 'i + 2')},
                   'https://company' || i || '.example',
                   timestamptz '{EPOCH}' - ({mix('i')} % 1000) * interval '1 day'
              FROM generate_series(1, {s.companies}) AS i""",
        "employers": f"""
            INSERT INTO employers (id, user_id, company_id, title, created_at)
            SELECT e, {employer_user}, 1 + {mix('e')} % {s.companies},
                   {pick(['Recruiter', 'Hiring Manager', 'HR Lead', 'Founder'], 'e')},
                   timestamptz '{EPOCH}'
              FROM generate_series(1, {s.employers}) AS e""",
        "candidates": f"""
            INSERT INTO candidates (id, user_id, headline, location, years_experience, skills, created_at)
            SELECT c, c, {pick(['Backend developer', 'Data analyst', 'Designer', 'Product manager', 'SRE'], 'c')},
                   {pick(['Berlin', 'Paris', 'London', 'Madrid', 'Warsaw', 'Lisbon'], 'c + 3')},
                   {mix('c')} % 25,
                   ARRAY[{pick(['python', 'sql', 'go', 'figma', 'excel', 'k8s'], 'c')},
                         {pick(['aws', 'react', 'java', 'pandas', 'terraform'], 'c + 7')}],
                   timestamptz '{EPOCH}' - ({mix('c')} % 700) * interval '1 day'
              FROM generate_series(1, {s.candidates}) AS c""",
        "accounts": f"""
            INSERT INTO accounts (id, user_id, type, provider, provider_account_id, access_token, token_type, scope)
            SELECT i, i, 'oauth', {pick(['google', 'github', 'linkedin'], 'i')}, 'acct-' || i,
                   md5('access' || i), 'bearer', 'openid email profile'
              FROM generate_series(1, {s.users}) AS i""",
        "sessions": f"""
            INSERT INTO sessions (id, session_token, user_id, expires)
            SELECT i, md5('session' || i), 1 + {mix('i')} % {s.users},
                   timestamptz '{EPOCH}' + ({mix('i')} % 60 - 30) * interval '1 day'
              FROM generate_series(1, {s.users}) AS i""",
        "verification_tokens": f"""
            INSERT INTO verification_tokens (identifier, token, expires)
            SELECT 'user' || i || '@intowork.example', md5('verify' || i),
                   timestamptz '{EPOCH}' + (i % 30) * interval '1 hour'
              FROM generate_series(1, {s.verification_tokens}) AS i""",
        "password_reset_tokens": f"""
            INSERT INTO password_reset_tokens (id, user_id, token, expires_at, used_at)
            SELECT i, 1 + {mix('i')} % {s.users}, md5('reset' || i),
                   timestamptz '{EPOCH}' + (i % 48) * interval '1 hour',
                   CASE WHEN i % 3 = 0 THEN timestamptz '{EPOCH}' END
              FROM generate_series(1, {s.password_reset_tokens}) AS i""",
        "jobs": f"""
            INSERT INTO jobs (id, company_id, employer_id, title, description, location, location_type, job_type,
                              status, salary_min, salary_max, posted_at, expires_at, created_at, updated_at)
            SELECT j, 1 + {mix('e')} % {s.companies}, e,
                   {pick(['Senior', 'Junior', 'Lead', 'Staff', 'Principal', 'Associate'], 'j')} || ' ' ||
                   {pick(['Python', 'Data', 'Frontend', 'Platform', 'Security', 'Mobile', 'Cloud', 'QA'], 'j + 1')} ||
                   ' ' || {pick(['Engineer', 'Analyst', 'Developer', 'Architect', 'Manager', 'Scientist'], 'j + 2')},
                   'Job ' || j || ': build and run things with a friendly team.',
                   {pick(['Berlin', 'Paris', 'London', 'Madrid', 'Warsaw', 'Lisbon', 'Remote'], 'j + 3')},
                   {pick(['onsite', 'remote', 'hybrid'], 'j + 4')},
                   {pick(['full_time', 'part_time', 'contract', 'internship'], 'j + 5')},
                   CASE WHEN {mix('j + 6')} % 100 < 70 THEN 'published'
                        WHEN {mix('j + 6')} % 100 < 85 THEN 'closed'
                        WHEN {mix('j + 6')} % 100 < 95 THEN 'draft' ELSE 'archived' END,
                   30000 + ({mix('j')} % 50) * 1000,
                   30000 + ({mix('j')} % 50) * 1000 + 5000 + ({mix('j + 9')} % 40) * 1000,
                   timestamptz '{EPOCH}' - ({mix('j')} % 180) * interval '1 day',
                   timestamptz '{EPOCH}' - ({mix('j')} % 180) * interval '1 day' + interval '60 days',
                   timestamptz '{EPOCH}' - ({mix('j')} % 180) * interval '1 day',
                   timestamptz '{EPOCH}'
              FROM (SELECT j, 1 + {mix('j')} % {s.employers} AS e
                      FROM generate_series(1, {s.jobs}) AS j) AS g""",
        # Candidate c's k-th application goes to job (h(c) + 7919 k) mod jobs: distinct for each k,
        # so (candidate_id, job_id) is unique without a lookup.
        "job_applications": f"""
            INSERT INTO job_applications (id, job_id, candidate_id, status, cover_letter, applied_at, updated_at)
            SELECT i + 1,
                   1 + ({mix('c')} + k * 7919) % {s.jobs},
                   c,
                   {pick(['submitted', 'reviewing', 'interview', 'offered', 'rejected', 'withdrawn'], 'i')},
                   CASE WHEN i % 4 = 0 THEN 'Cover letter ' || i END,
                   timestamptz '{EPOCH}' - ({mix('i')} % 180) * interval '1 day',
                   timestamptz '{EPOCH}'
              FROM (SELECT i, 1 + i % {s.candidates} AS c, i / {s.candidates} AS k
                      FROM generate_series(0, {s.applications} - 1) AS i) AS g""",
    }


def defect_statements(n: int, s: Sizes) -> list[tuple[str, str]]:
    """Rows that break integrity on purpose, each kind with a known count."""
    return [
        ("orphaned job_applications (candidate_id without a candidate)", f"""
            INSERT INTO job_applications (id, job_id, candidate_id, status, applied_at)
            SELECT {s.applications} + i, 1 + i % {s.jobs}, {s.candidates} + 1000000 + i, 'submitted',
                   timestamptz '{EPOCH}'
              FROM generate_series(1, {n}) AS i"""),
        # Copies of live (not rejected) applications: duplicates even under the "one live application" rule.
        ("duplicate job_applications (same candidate and job)", f"""
            INSERT INTO job_applications (id, job_id, candidate_id, status, applied_at)
            SELECT {s.applications} + {n} + row_number() OVER (ORDER BY id), job_id, candidate_id, 'submitted',
                   applied_at
              FROM (SELECT id, job_id, candidate_id, applied_at FROM job_applications
                     WHERE status <> 'rejected' ORDER BY id LIMIT {n}) AS live"""),
        ("jobs with salary_min > salary_max", f"""
            UPDATE jobs SET salary_min = salary_max + 1000 WHERE id <= {n}"""),
    ]


def connect():
    url = os.environ.get("DATABASE_URL")
    if url:
        url = url.replace("postgresql+psycopg2://", "postgresql://")
    try:
        return psycopg2.connect(url or "", application_name="intowork-generator")
    except psycopg2.Error as error:
        raise SystemExit(f"generate_data: cannot connect: {' '.join(str(error).split())}") from None


def existing_rows(cur) -> dict[str, int]:
    counts = {}
    for table in TABLES:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if not cur.fetchone()[0]:
            raise SystemExit(f"generate_data: table {table} is missing: run 'alembic upgrade a7f3b2c1d9e8' first")
        cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
        counts[table] = cur.fetchone()[0]
    return counts


def generate(scale: float, replace: bool, defects: int) -> dict[str, int]:
    sizes = Sizes.at(scale)
    conn = connect()
    conn.autocommit = False
    cur = conn.cursor()
    filled = [t for t, has_rows in existing_rows(cur).items() if has_rows]
    if filled and not replace:
        raise SystemExit(f"generate_data: tables already hold rows ({', '.join(filled)}): add --replace to reload")
    cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if cur.fetchone()[0]:
        # Rows are consistent by construction: skipping the per-row foreign-key triggers makes the load
        # several times faster and is what lets --plant-defects write orphans.
        cur.execute("SET session_replication_role = replica")
    elif defects:
        raise SystemExit("generate_data: --plant-defects needs a superuser (orphans bypass foreign keys)")
    if filled:
        cur.execute("TRUNCATE " + ", ".join(TABLES))
    started = time.monotonic()
    for table, statement in statements(sizes).items():
        cur.execute(statement)
    for label, statement in defect_statements(defects, sizes) if defects else []:
        try:
            cur.execute(statement)
        except psycopg2.Error as error:
            conn.rollback()
            raise SystemExit(f"generate_data: cannot plant {label}: {' '.join(str(error).split())} "
                             "(plant defects at the baseline revision a7f3b2c1d9e8)") from None
    for table in TABLES:
        if table != "verification_tokens":
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    conn.commit()
    loaded = time.monotonic() - started
    conn.autocommit = True
    cur.execute("ANALYZE")
    elapsed = time.monotonic() - started
    counts = {}
    for table in TABLES:
        cur.execute(f"SELECT count(*) FROM {table}")
        counts[table] = cur.fetchone()[0]
    conn.close()
    print(f"generate_data: scale {scale}: loaded {sum(counts.values()):,} rows in {loaded:.1f} s, "
          f"{elapsed:.1f} s with ANALYZE")
    for table, count in counts.items():
        print(f"  {table:24} {count:>12,}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load deterministic INTOWORK reference data.")
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1,000,000 job applications")
    parser.add_argument("--replace", action="store_true", help="empty the tables first")
    parser.add_argument("--plant-defects", type=int, default=0, metavar="N",
                        help="add N orphans, N duplicate applications and N bad salary ranges")
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error(f"--scale {args.scale}: give a positive number such as 0.01 or 1")
    generate(args.scale, args.replace, args.plant_defects)
    return 0


if __name__ == "__main__":
    sys.exit(main())
