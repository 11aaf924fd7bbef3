"""`eduhub schemas check` against git history: incompatible changes are refused, naming the field."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub.contract.evolution import compare

ROOT = Path(__file__).resolve().parents[2]


def registration() -> dict:
    return json.loads((ROOT / "schemas/exam/registration.avsc").read_text())


def test_adding_an_optional_field_and_an_enum_symbol_is_compatible():
    new = registration()
    new["fields"].append({"name": "note", "type": ["null", "string"], "default": None, "doc": "x"})
    assert compare(new, registration(), subject="s", against="v1") is None


def test_a_new_required_field_without_default_is_named():
    new = registration()
    new["fields"].append({"name": "exam_room", "type": "string", "doc": "x"})
    problem = compare(new, registration(), subject="edu.exam.registration-value", against="v1")
    assert problem is not None and problem.fields == ("exam_room",)
    assert "reader_field_missing_default_value" in problem.kinds
    assert "exam_room" in str(problem)


def test_a_removed_enum_symbol_is_named_with_its_field():
    new = registration()
    gender = next(f for f in new["fields"] if f["name"] == "gender")
    gender["type"]["symbols"] = ["MALE"]
    problem = compare(new, registration(), subject="s", against="v1")
    assert problem.fields == ("gender",) and "missing_enum_symbols" in problem.kinds
    assert "FEMALE" in str(problem)


def test_a_change_inside_a_nested_record_names_the_enclosing_field():
    # Avro's checker reports a changed branch of a union at the union, not deeper.
    new = registration()
    cert = next(f for f in new["fields"] if f["name"] == "exemption_certificate")
    cert["type"][1]["fields"][0]["type"] = "int"
    assert compare(new, registration(), subject="s", against="v1").fields == ("exemption_certificate",)


@pytest.fixture
def schema_repo(tmp_path):
    """A git repository holding a copy of schemas/, one commit deep."""
    if shutil.which("git") is None:
        pytest.fail("git is needed for `eduhub schemas check`")
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "schemas", repo / "schemas")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "schemas"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env)
    return repo


def run_check(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub", "schemas", "check", "--no-registry"], cwd=ROOT,
                          env={**os.environ, "EDUHUB_SCHEMA_DIR": str(repo / "schemas")},
                          capture_output=True, text=True)


def test_cli_passes_an_unchanged_tree(schema_repo):
    done = run_check(schema_repo)
    assert done.returncode == 0, done.stderr
    assert "compatible with git history" in done.stdout


@pytest.mark.parametrize("change, field", [("required", "exam_room"), ("enum", "gender")])
def test_cli_rejects_an_incompatible_working_tree(schema_repo, change, field):
    path = schema_repo / "schemas/exam/registration.avsc"
    schema = json.loads(path.read_text())
    if change == "required":
        schema["fields"].append({"name": "exam_room", "type": "string", "doc": "x"})
    else:
        next(f for f in schema["fields"] if f["name"] == "gender")["type"]["symbols"] = ["MALE"]
    path.write_text(json.dumps(schema))
    done = run_check(schema_repo)
    assert done.returncode == 1
    assert "INCOMPATIBLE edu.exam.registration-value" in done.stderr and f"field {field}" in done.stderr


# --------------------------------------------------------------------------- PII and identifier tags


def _untag(repo: Path, entity_file: str, field: str, tag: str = "pii") -> None:
    path = repo / "schemas" / entity_file
    schema = json.loads(path.read_text())
    del next(f for f in schema["fields"] if f["name"] == field)[tag]
    path.write_text(json.dumps(schema))


def _acknowledge(repo: Path, entries: list) -> None:
    import yaml

    (repo / "schemas/pii-changes.yaml").write_text(yaml.safe_dump({"acknowledged": entries}, allow_unicode=True))


def test_cli_rejects_a_removed_pii_tag_naming_the_field_and_the_fix(schema_repo):
    """Before: Avro ignores custom attributes, so this passed and the phone went out in clear."""
    path = schema_repo / "schemas/school/student.avsc"  # a second committed version that has the tag
    path.write_text(path.read_text().replace("Learner", "A learner", 1))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "commit", "-qam", "doc"], cwd=schema_repo, check=True, env=env)
    _untag(schema_repo, "school/student.avsc", "guardian_phone")
    done = run_check(schema_repo)
    assert done.returncode == 1, done.stdout
    assert "edu.school.student-value: field guardian_phone lost its \"pii\": true tag" in done.stderr
    assert "put the tag back" in done.stderr and "schemas/pii-changes.yaml" in done.stderr
    assert "{entity: school.student, field: guardian_phone, tag: pii, reason:" in done.stderr
    assert len(done.stderr.splitlines()) == 1  # once, not once per earlier version


def test_cli_rejects_a_removed_identifier_tag(schema_repo):
    _untag(schema_repo, "exam/result.avsc", "candidate_number", "eduhub.identifier")
    done = run_check(schema_repo)
    assert done.returncode == 1 and "field candidate_number lost its \"eduhub.identifier\": true tag" in done.stderr


def test_an_acknowledged_removal_passes_and_a_sloppy_acknowledgement_fails(schema_repo):
    _untag(schema_repo, "school/student.avsc", "guardian_phone")
    entry = {"entity": "school.student", "field": "guardian_phone", "tag": "pii",
             "reason": "the school's switchboard number now, agreed with the DPO on 2026-06-01"}
    _acknowledge(schema_repo, [entry])
    done = run_check(schema_repo)
    assert done.returncode == 0, done.stderr
    _acknowledge(schema_repo, [dict(entry, reason=" ")])
    done = run_check(schema_repo)
    assert done.returncode == 1 and "pii-changes.yaml: acknowledged[0].reason" in done.stderr
    _acknowledge(schema_repo, [dict(entry, field="phone")])  # acknowledges another field: still refused
    assert "field guardian_phone lost" in run_check(schema_repo).stderr


def test_a_removed_tag_is_found_at_any_depth():
    from hub.contract.evolution import tag_removals

    old = {"type": "record", "name": "R", "fields": [
        {"name": "people", "type": {"type": "array", "items": {"type": "record", "name": "P", "fields": [
            {"name": "phone", "type": ["null", "string"], "pii": True}]}}}]}
    new = json.loads(json.dumps(old))
    del new["fields"][0]["type"]["items"]["fields"][0]["pii"]
    (removal,) = tag_removals(new, old, entity="demo.r", subject="s", against="git 1", acknowledged=set())
    assert (removal.field, removal.tag) == ("people.phone", "pii")
    assert tag_removals(new, old, entity="demo.r", subject="s", against="git 1",
                        acknowledged={("demo.r", "people.phone", "pii")}) == []
    assert tag_removals(old, new, entity="demo.r", subject="s", against="git 1", acknowledged=set()) == []
