"""Sector rules: a valid record per entity, and an invalid example for every rule id."""

from __future__ import annotations

import ast
import inspect
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Callable

import pytest

from hub.contract import rules
from hub.contract.rules import RULES, RuleContext, apply_rules

# Fixed "today" so the teacher's age rule does not depend on the machine's clock.
CTX = RuleContext(today=date(2026, 3, 1))
UTC = timezone.utc

# Hải Phòng wards (province 31) as vietnam-provinces lists them: Phường Hồng Bàng, Phường Ngô
# Quyền, Phường Lê Chân; 07090 Phường An Sinh is in Quảng Ninh (22).
WARD_HONG_BANG = "11311"
WARD_NGO_QUYEN = "11341"
WARD_LE_CHAN = "11383"
WARD_QUANG_NINH = "07090"


# --------------------------------------------------------------------------------------------
# Builders: one valid canonical record per entity (dates as date, timestamps aware UTC, Decimals).


def school(**overrides: Any) -> dict:
    record = {
        "school_code": "HP031",
        "name": "Trường THPT Ngô Quyền",
        "levels": ["UPPER_SECONDARY"],
        "ownership": "PUBLIC",
        "province_code": "31",
        "ward_code": WARD_NGO_QUYEN,
        "phone": "+84912000111",
        "status": "ACTIVE",
    }
    record.update(overrides)
    return record


def student(**overrides: Any) -> dict:
    record = {
        "student_id": "031309001234",  # 031 Hải Phòng, G=3 female born 20xx, YY=09
        "full_name": "Nguyễn Thị Thu Hà",
        "date_of_birth": date(2009, 3, 15),
        "gender": "FEMALE",
        "ethnicity_code": "01",
        "nationality": "VN",
        "school_code": "HP031",
        "grade": 10,
        "class_name": "10A1",
        "school_year": "2025-2026",
        "address": {"province_code": "31", "ward_code": WARD_LE_CHAN, "street": "Số 12 phố Lạch Tray"},
        "guardian_phone": "0912345678",
        "status": "STUDYING",
    }
    record.update(overrides)
    return record


def school_class(**overrides: Any) -> dict:
    record = {
        "class_id": "HP031-2025-2026-10A1",
        "school_code": "HP031",
        "school_year": "2025-2026",
        "grade": 10,
        "name": "10A1",
        "homeroom_teacher_id": "GV031-0007",
        "size": 42,
    }
    record.update(overrides)
    return record


def teacher(**overrides: Any) -> dict:
    record = {
        "teacher_id": "GV031-0007",
        "national_id": "031185004321",  # G=1 female born 19xx, YY=85
        "full_name": "Phạm Thị Hoà",
        "date_of_birth": date(1985, 7, 20),
        "gender": "FEMALE",
        "school_code": "HP031",
        "subjects": ["MATH", "INFORMATICS"],
        "phone": "+84987654321",
        "email": "hoa.pt@haiphong.edu.vn",
        "status": "WORKING",
    }
    record.update(overrides)
    return record


def score(**overrides: Any) -> dict:
    record = {
        "student_id": "031309001234",
        "school_code": "HP031",
        "school_year": "2025-2026",
        "term": 1,
        "subject": "MATH",
        "kind": "REGULAR",
        "seq": 2,
        "score": Decimal("8.50"),
        "pass_result": None,
        "teacher_id": "GV031-0007",
        "recorded_at": datetime(2025, 10, 15, 2, 30, tzinfo=UTC),
    }
    record.update(overrides)
    return record


def term_result(**overrides: Any) -> dict:
    record = {
        "student_id": "031309001234",
        "school_code": "HP031",
        "school_year": "2025-2026",
        "term": "1",
        "learning_rating": "TOT",
        "conduct_rating": "TOT",
        "average_score": Decimal("8.6"),
    }
    record.update(overrides)
    return record


def application(**overrides: Any) -> dict:
    record = {
        "application_id": "TS10-2026-000123",
        "admission_year": 2026,
        "level": "GRADE_10",
        "applicant_id": "030211007890",  # 030 old Hải Dương, G=2 male born 20xx, YY=11
        "full_name": "Trần Văn Hòa",
        "date_of_birth": date(2011, 9, 2),
        "gender": "MALE",
        "current_school_code": "THCS017",
        "preferences": [{"rank": 1, "school_code": "HP031"}, {"rank": 2, "school_code": "HP045"}],
        "specialized_choice": {"school_code": "HPCTP", "subject": "MATH"},
        "priority_points": Decimal("1.5"),
        "encouragement_points": Decimal("0.5"),
        "submitted_at": datetime(2026, 5, 10, 3, 0, tzinfo=UTC),
        "status": "SUBMITTED",
    }
    record.update(overrides)
    return record


def application_grade6(**overrides: Any) -> dict:
    record = application(
        application_id="TS6-2026-000045",
        level="GRADE_6",
        applicant_id="031215004567",  # G=2 male born 2015
        full_name="Đỗ Minh Khôi",
        date_of_birth=date(2015, 1, 8),
        current_school_code="TH009",
        preferences=[{"rank": 1, "school_code": "THCS017"}],
        specialized_choice=None,
        priority_points=Decimal("0"),
        encouragement_points=Decimal("0"),
    )
    record.update(overrides)
    return record


def enrollment_result(**overrides: Any) -> dict:
    record = {
        "application_id": "TS10-2026-000123",
        "admission_year": 2026,
        "total_score": Decimal("38.75"),
        "outcome": "ADMITTED",
        "admitted_school_code": "HP031",
        "matched_rank": 1,
        "published_at": datetime(2026, 7, 5, 1, 0, tzinfo=UTC),
    }
    record.update(overrides)
    return record


def registration(**overrides: Any) -> dict:
    record = {
        "registration_id": "DKT2026-03-000456",
        "exam_year": 2026,
        "council_code": "03",
        "national_id": "031208001122",  # G=2 male born 20xx, YY=08
        "full_name": "Lê Minh Quân",
        "date_of_birth": date(2008, 5, 1),
        "gender": "MALE",
        "candidate_type": "CURRENT_STUDENT",
        "school_code": "HP031",
        "subjects": ["MATH", "LITERATURE", "PHYSICS", "FOREIGN_LANGUAGE"],
        "foreign_language": "N1",
        "language_exemption": False,
        "exemption_certificate": None,
        "priority_area": "KV3",
        "priority_group": None,
        "registered_at": datetime(2026, 4, 1, 1, 0, tzinfo=UTC),
        "status": "SUBMITTED",
    }
    record.update(overrides)
    return record


def exam_result(**overrides: Any) -> dict:
    record = {
        "exam_year": 2026,
        "candidate_number": "03001234",
        "national_id": "031208001122",
        "scores": {
            "MATH": Decimal("8.25"),
            "LITERATURE": Decimal("7.50"),
            "PHYSICS": Decimal("9.00"),
            "FOREIGN_LANGUAGE": Decimal("6.80"),
        },
        "graduation_score": Decimal("7.89"),
        "passed": True,
    }
    record.update(overrides)
    return record


BUILDERS: dict[str, tuple[str, Callable[..., dict]]] = {
    "school": ("school.school", school),
    "student": ("school.student", student),
    "class": ("school.class", school_class),
    "teacher": ("school.teacher", teacher),
    "score": ("school.score", score),
    "term_result": ("school.term_result", term_result),
    "application": ("enrollment.application", application),
    "application6": ("enrollment.application", application_grade6),
    "result": ("enrollment.result", enrollment_result),
    "registration": ("exam.registration", registration),
    "exam_result": ("exam.result", exam_result),
}


def found(problems) -> set[tuple[str, str]]:
    return {(p.field, p.rule) for p in problems}


# --------------------------------------------------------------------------------------------
# Valid records.


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_valid_record_has_no_problems(name):
    entity, build = BUILDERS[name]
    assert apply_rules(entity, build(), CTX) == []


def test_every_entity_of_the_dictionary_has_checks():
    assert {entity for entity, _ in BUILDERS.values()} == set(rules.CHECKS)


def test_an_entity_without_rules_has_no_problems():
    assert apply_rules("school.unknown_entity", {"x": 1}) == []


def test_default_context_uses_todays_date():
    assert apply_rules("school.teacher", teacher()) == []


# --------------------------------------------------------------------------------------------
# Invalid examples: each reports exactly the expected (field, rule).

GRADUATED = {"candidate_type": "GRADUATED_FOR_ADMISSION", "school_code": None}
EXEMPT_CERT = {"kind": "IELTS", "expires_on": date(2027, 3, 1)}

CASES: list[tuple[str, str, dict, str, str]] = [
    # Generic: person names.
    ("name_too_long", "student", {"full_name": "Nguyễn " + "A" * 100}, "data.full_name", "person_name.length"),
    ("name_empty", "registration", {"full_name": ""}, "data.full_name", "person_name.length"),
    ("name_digit", "student", {"full_name": "Nguyễn Văn 2"}, "data.full_name", "person_name.invalid_characters"),
    ("name_symbol", "teacher", {"full_name": "Phạm Thị Hoà."}, "data.full_name", "person_name.invalid_characters"),
    ("name_no_letter", "application", {"full_name": "-"}, "data.full_name", "person_name.invalid_characters"),
    # Generic: personal ID.
    ("id_11_digits", "student", {"student_id": "03130900123"}, "data.student_id", "national_id.format"),
    ("id_letters", "registration", {"national_id": "03120800112A"}, "data.national_id", "national_id.format"),
    ("id_fullwidth", "exam_result", {"national_id": "０３１２０８００１１２２"}, "data.national_id", "national_id.format"),
    ("id_province", "student", {"student_id": "003309001234"}, "data.student_id", "national_id.province"),
    ("id_new_code_only", "teacher", {"national_id": "099185004321"}, "data.national_id", "national_id.province"),
    ("id_century", "student", {"student_id": "031909001234"}, "data.student_id", "national_id.century_gender"),
    ("id_century_score", "score", {"student_id": "031609001234"}, "data.student_id", "national_id.century_gender"),
    ("id_birth_year", "student", {"date_of_birth": date(2008, 3, 15)}, "data.student_id", "national_id.birth_year_mismatch"),
    ("id_century_wrong", "teacher", {"national_id": "031385004321"}, "data.national_id", "national_id.birth_year_mismatch"),
    ("id_gender", "student", {"gender": "MALE"}, "data.student_id", "national_id.gender_mismatch"),
    ("id_gender_app", "application", {"gender": "FEMALE"}, "data.applicant_id", "national_id.gender_mismatch"),
    # Generic: codes.
    ("school_code_lower", "student", {"school_code": "hp031"}, "data.school_code", "school_code.format"),
    ("school_code_short", "class", {"school_code": "H", "class_id": "H-2025-2026-10A1"}, "data.school_code", "school_code.format"),
    ("school_code_pref", "application",
     {"preferences": [{"rank": 1, "school_code": "HP031"}, {"rank": 2, "school_code": "HP-045"}]},
     "data.preferences[1].school_code", "school_code.format"),
    ("school_code_specialized", "application", {"specialized_choice": {"school_code": "THPT Chuyên", "subject": "MATH"}},
     "data.specialized_choice.school_code", "school_code.format"),
    ("school_code_admitted", "result", {"admitted_school_code": "HP 031"}, "data.admitted_school_code", "school_code.format"),
    ("school_code_current", "application", {"current_school_code": "THCS_017"}, "data.current_school_code", "school_code.format"),
    ("school_year_gap", "student", {"school_year": "2025-2027"}, "data.school_year", "school_year.format"),
    ("school_year_short", "score", {"school_year": "25-26"}, "data.school_year", "school_year.format"),
    ("school_year_slash", "term_result", {"school_year": "2025/2026"}, "data.school_year", "school_year.format"),
    ("phone_landline", "student", {"guardian_phone": "02253842111"}, "data.guardian_phone", "phone.format"),
    ("phone_prefix_02", "school", {"phone": "0212345678"}, "data.phone", "phone.format"),
    ("phone_dots", "teacher", {"phone": "0912.345.678"}, "data.phone", "phone.format"),
    ("phone_84_without_plus", "teacher", {"phone": "84912345678"}, "data.phone", "phone.format"),
    ("phone_intl_short", "student", {"guardian_phone": "+8491234567"}, "data.guardian_phone", "phone.format"),
    ("email_no_domain", "teacher", {"email": "hoa.pt@"}, "data.email", "email.format"),
    ("email_no_at", "teacher", {"email": "hoa.pt.haiphong.edu.vn"}, "data.email", "email.format"),
    ("province_pre_merger", "student", {"address": {"province_code": "30", "ward_code": WARD_LE_CHAN, "street": None}},
     "data.address.province_code", "province_code.unknown"),
    ("province_school", "school", {"province_code": "99"}, "data.province_code", "province_code.unknown"),
    ("ward_4_digits", "school", {"ward_code": "1134"}, "data.ward_code", "ward_code.format"),
    ("ward_unknown", "student", {"address": {"province_code": "31", "ward_code": "99999", "street": None}},
     "data.address.ward_code", "ward_code.unknown"),
    ("ward_other_province", "student", {"address": {"province_code": "31", "ward_code": WARD_QUANG_NINH, "street": None}},
     "data.address.ward_code", "ward_code.province_mismatch"),
    ("ward_school_other_province", "school", {"ward_code": WARD_QUANG_NINH}, "data.ward_code", "ward_code.province_mismatch"),
    ("ethnicity_55", "student", {"ethnicity_code": "55"}, "data.ethnicity_code", "ethnicity_code.unknown"),
    ("ethnicity_00", "student", {"ethnicity_code": "00"}, "data.ethnicity_code", "ethnicity_code.unknown"),
    ("nationality_lower", "student", {"nationality": "vn"}, "data.nationality", "nationality.format"),
    ("nationality_alpha3", "student", {"nationality": "VNM"}, "data.nationality", "nationality.format"),
    # Generic: UNKNOWN enum symbol.
    ("unknown_status", "student", {"status": "UNKNOWN"}, "data.status", "enum.unknown_symbol"),
    ("unknown_level_item", "school", {"levels": ["UPPER_SECONDARY", "UNKNOWN"]}, "data.levels[1]", "enum.unknown_symbol"),
    ("unknown_ownership", "school", {"ownership": "UNKNOWN"}, "data.ownership", "enum.unknown_symbol"),
    ("unknown_candidate_type", "registration", {"candidate_type": "UNKNOWN"}, "data.candidate_type", "enum.unknown_symbol"),
    ("unknown_exam_subject", "registration", {"subjects": ["MATH", "LITERATURE", "UNKNOWN", "FOREIGN_LANGUAGE"]},
     "data.subjects[2]", "enum.unknown_symbol"),
    ("unknown_kind", "score", {"kind": "UNKNOWN", "seq": 1}, "data.kind", "enum.unknown_symbol"),
    ("unknown_learning_rating", "term_result", {"learning_rating": "UNKNOWN"}, "data.learning_rating", "enum.unknown_symbol"),
    ("unknown_conduct_rating", "term_result", {"conduct_rating": "UNKNOWN"}, "data.conduct_rating", "enum.unknown_symbol"),
    ("unknown_level", "application", {"level": "UNKNOWN"}, "data.level", "enum.unknown_symbol"),
    ("unknown_outcome", "result", {"outcome": "UNKNOWN"}, "data.outcome", "enum.unknown_symbol"),
    ("unknown_teacher_subject", "teacher", {"subjects": ["MATH", "UNKNOWN"]}, "data.subjects[1]", "enum.unknown_symbol"),
    ("grade_13", "student", {"grade": 13}, "data.grade", "grade.range"),
    ("grade_0_class", "class", {"grade": 0}, "data.grade", "grade.range"),
    ("subject_unknown_teacher", "teacher", {"subjects": ["MATH", "ASTRONOMY"]}, "data.subjects[1]", "subject.unknown"),
    ("subject_unknown_score", "score", {"subject": "ASTRONOMY"}, "data.subject", "subject.unknown"),
    # school.school
    ("school_outside_home", "school", {"province_code": "22", "ward_code": WARD_QUANG_NINH}, "data.province_code",
     "school.home_province"),
    ("school_levels_empty", "school", {"levels": []}, "data.levels", "school.levels"),
    ("school_levels_repeat", "school", {"levels": ["PRIMARY", "PRIMARY"]}, "data.levels", "school.levels"),
    # school.student
    ("student_too_young", "student", {"student_id": "031313001234", "date_of_birth": date(2013, 2, 1)},
     "data.date_of_birth", "student.age_for_grade"),
    ("student_too_old", "student", {"student_id": "031304001234", "date_of_birth": date(2004, 2, 1)},
     "data.date_of_birth", "student.age_for_grade"),
    ("class_name_format", "student", {"class_name": "10-A1"}, "data.class_name", "student.class_name"),
    ("class_name_grade", "student", {"class_name": "11A1"}, "data.class_name", "student.class_name"),
    ("class_name_no_letter", "student", {"class_name": "101"}, "data.class_name", "student.class_name"),
    # school.class
    ("class_id", "class", {"class_id": "HP031-2025-10A1"}, "data.class_id", "class.id_mismatch"),
    ("class_size", "class", {"size": 61}, "data.size", "class.size_range"),
    ("class_size_negative", "class", {"size": -1}, "data.size", "class.size_range"),
    ("class_name_other_grade", "class", {"name": "11A1", "class_id": "HP031-2025-2026-11A1"}, "data.name", "class.name"),
    # school.teacher
    ("teacher_no_subjects", "teacher", {"subjects": []}, "data.subjects", "teacher.subjects"),
    ("teacher_subject_twice", "teacher", {"subjects": ["MATH", "INFORMATICS", "MATH"]}, "data.subjects[2]", "teacher.subjects"),
    ("teacher_too_young", "teacher", {"national_id": "031310004321", "date_of_birth": date(2010, 1, 1)},
     "data.date_of_birth", "teacher.age"),
    # school.score
    ("score_term_3", "score", {"term": 3}, "data.term", "score.term"),
    ("score_seq_0", "score", {"seq": 0}, "data.seq", "score.seq"),
    ("score_seq_midterm", "score", {"kind": "MIDTERM", "seq": 2}, "data.seq", "score.seq"),
    ("score_comment_with_score", "score", {"subject": "PE", "score": Decimal("8.00"), "pass_result": "PASS"},
     "data.score", "score.grading_mode"),
    ("score_comment_without_result", "score", {"subject": "EXPERIENTIAL", "score": None, "pass_result": None},
     "data.pass_result", "score.grading_mode"),
    ("score_numeric_without_score", "score", {"score": None}, "data.score", "score.grading_mode"),
    ("score_numeric_with_result", "score", {"pass_result": "PASS"}, "data.pass_result", "score.grading_mode"),
    ("score_above_10", "score", {"score": Decimal("10.50")}, "data.score", "score.range"),
    ("score_negative", "score", {"score": Decimal("-0.25")}, "data.score", "score.range"),
    ("score_3_places", "score", {"score": Decimal("8.125")}, "data.score", "score.range"),
    # school.term_result
    ("term_result_term", "term_result", {"term": "3"}, "data.term", "term_result.term"),
    ("term_result_average_high", "term_result", {"average_score": Decimal("10.5")}, "data.average_score",
     "term_result.average_range"),
    ("term_result_average_places", "term_result", {"average_score": Decimal("8.25")}, "data.average_score",
     "term_result.average_range"),
    # enrollment.application
    ("pref_rank_gap", "application",
     {"preferences": [{"rank": 1, "school_code": "HP031"}, {"rank": 3, "school_code": "HP045"}]},
     "data.preferences[1].rank", "application.preference_ranks"),
    ("pref_rank_repeat", "application",
     {"preferences": [{"rank": 1, "school_code": "HP031"}, {"rank": 1, "school_code": "HP045"}]},
     "data.preferences[1].rank", "application.preference_ranks"),
    ("pref_rank_zero", "application6", {"preferences": [{"rank": 0, "school_code": "THCS017"}]},
     "data.preferences[0].rank", "application.preference_ranks"),
    ("pref_same_school", "application",
     {"preferences": [{"rank": 1, "school_code": "HP031"}, {"rank": 2, "school_code": "HP031"}]},
     "data.preferences[1].school_code", "application.preference_duplicate_school"),
    ("pref_three_grade10", "application",
     {"preferences": [{"rank": 1, "school_code": "HP031"}, {"rank": 2, "school_code": "HP045"},
                      {"rank": 3, "school_code": "HP052"}]},
     "data.preferences", "application.preference_count"),
    ("pref_none_grade10", "application", {"preferences": []}, "data.preferences", "application.preference_count"),
    ("pref_two_grade6", "application6",
     {"preferences": [{"rank": 1, "school_code": "THCS017"}, {"rank": 2, "school_code": "THCS021"}]},
     "data.preferences", "application.preference_count"),
    ("specialized_grade6", "application6", {"specialized_choice": {"school_code": "HPCTP", "subject": "MATH"}},
     "data.specialized_choice", "application.specialized_choice_level"),
    ("priority_points", "application", {"priority_points": Decimal("0.5")}, "data.priority_points",
     "application.priority_points"),
    ("encouragement_points", "application", {"encouragement_points": Decimal("2.0")}, "data.encouragement_points",
     "application.encouragement_points"),
    ("age_grade1_seven", "application6",
     {"level": "GRADE_1", "applicant_id": "031219004567", "date_of_birth": date(2019, 1, 8),
      "current_school_code": None},
     "data.date_of_birth", "application.age_for_level"),
    ("age_grade6_ten", "application6", {"applicant_id": "031216004567", "date_of_birth": date(2016, 1, 8)},
     "data.date_of_birth", "application.age_for_level"),
    ("age_grade10_fourteen", "application", {"applicant_id": "030212007890", "date_of_birth": date(2012, 9, 2)},
     "data.date_of_birth", "application.age_for_level"),
    # enrollment.result
    ("admitted_without_rank", "result", {"matched_rank": None}, "data.matched_rank", "result.admission_fields"),
    ("admitted_without_school", "result", {"admitted_school_code": None}, "data.admitted_school_code",
     "result.admission_fields"),
    ("not_admitted_with_school", "result", {"outcome": "NOT_ADMITTED", "matched_rank": None},
     "data.admitted_school_code", "result.admission_fields"),
    ("matched_rank_zero", "result", {"matched_rank": 0}, "data.matched_rank", "result.matched_rank"),
    ("total_score_negative", "result", {"total_score": Decimal("-1.00")}, "data.total_score", "result.total_score"),
    # exam.registration
    ("council_one_digit", "registration", {"council_code": "3"}, "data.council_code", "exam.council_code.format"),
    ("council_other", "registration", {"council_code": "01"}, "data.council_code", "exam.council_code.mismatch"),
    ("subjects_no_literature", "registration", {"subjects": ["MATH", "PHYSICS", "FOREIGN_LANGUAGE"]},
     "data.subjects", "exam.subjects.compulsory_missing"),
    ("subjects_one_elective", "registration", {"subjects": ["MATH", "LITERATURE", "PHYSICS"], "foreign_language": None},
     "data.subjects", "exam.subjects.elective_count"),
    ("subjects_three_electives", "registration",
     {"subjects": ["MATH", "LITERATURE", "PHYSICS", "CHEMISTRY", "FOREIGN_LANGUAGE"]},
     "data.subjects", "exam.subjects.elective_count"),
    ("subjects_repeat", "registration", {"subjects": ["MATH", "LITERATURE", "PHYSICS", "PHYSICS", "FOREIGN_LANGUAGE"]},
     "data.subjects[3]", "exam.subjects.duplicate"),
    ("subjects_repeat_graduated", "registration",
     {**GRADUATED, "subjects": ["MATH", "MATH"], "foreign_language": None}, "data.subjects[1]", "exam.subjects.duplicate"),
    ("subjects_five_graduated", "registration",
     {**GRADUATED, "subjects": ["MATH", "LITERATURE", "PHYSICS", "CHEMISTRY", "BIOLOGY"], "foreign_language": None},
     "data.subjects", "exam.subjects.count"),
    ("subjects_none_graduated", "registration", {**GRADUATED, "subjects": [], "foreign_language": None},
     "data.subjects", "exam.subjects.count"),
    ("language_missing", "registration", {"foreign_language": None}, "data.foreign_language",
     "exam.foreign_language.required"),
    ("language_not_chosen", "registration", {"subjects": ["MATH", "LITERATURE", "PHYSICS", "CHEMISTRY"]},
     "data.foreign_language", "exam.foreign_language.forbidden"),
    ("exemption_without_language", "registration",
     {"subjects": ["MATH", "LITERATURE", "PHYSICS", "CHEMISTRY"], "foreign_language": None,
      "language_exemption": True, "exemption_certificate": EXEMPT_CERT},
     "data.language_exemption", "exam.exemption.requires_foreign_language"),
    ("exemption_without_certificate", "registration", {"language_exemption": True},
     "data.exemption_certificate", "exam.exemption.certificate_missing"),
    ("exemption_certificate_expired", "registration",
     {"language_exemption": True, "exemption_certificate": {"kind": "IELTS", "expires_on": date(2026, 5, 31)}},
     "data.exemption_certificate.expires_on", "exam.exemption.certificate_expired"),
    ("current_student_without_school", "registration", {"school_code": None}, "data.school_code",
     "exam.school_code.required"),
    ("priority_group_08", "registration", {"priority_group": "08"}, "data.priority_group", "exam.priority_group"),
    ("priority_group_1", "registration", {"priority_group": "1"}, "data.priority_group", "exam.priority_group"),
    ("candidate_fifteen", "registration", {"national_id": "031211001122", "date_of_birth": date(2011, 5, 1)},
     "data.date_of_birth", "exam.candidate_age"),
    # exam.result
    ("candidate_number_7", "exam_result", {"candidate_number": "0300123"}, "data.candidate_number",
     "exam.candidate_number.format"),
    ("candidate_number_council_00", "exam_result", {"candidate_number": "00123456"}, "data.candidate_number",
     "exam.candidate_number.format"),
    ("exam_score_above_10", "exam_result",
     {"scores": {"MATH": Decimal("10.25"), "LITERATURE": Decimal("7.50")}}, "data.scores.MATH",
     "exam.result.score_range"),
    ("exam_score_school_subject", "exam_result", {"scores": {"MATH": Decimal("8.25"), "ENGLISH": Decimal("7.00")}},
     "data.scores.ENGLISH", "exam.result.subject_unknown"),
    ("passed_with_fail_mark", "exam_result",
     {"scores": {"MATH": Decimal("1.00"), "LITERATURE": Decimal("9.00")}}, "data.passed", "exam.result.passed_inconsistent"),
    ("passed_below_5", "exam_result", {"graduation_score": Decimal("4.99")}, "data.passed",
     "exam.result.passed_inconsistent"),
    ("passed_without_graduation_score", "exam_result", {"graduation_score": None}, "data.passed",
     "exam.result.passed_inconsistent"),
]


@pytest.mark.parametrize("builder, overrides, field, rule", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_example_reports_exactly_its_rule(builder, overrides, field, rule):
    entity, build = BUILDERS[builder]
    problems = apply_rules(entity, build(**overrides), CTX)
    assert found(problems) == {(field, rule)}, [p.message for p in problems]
    for p in problems:
        assert p.message.startswith(p.field + ":")


@pytest.mark.parametrize("year", [0, -1, 10_000, 2**31 - 1])
def test_an_exam_year_outside_the_calendar_is_a_problem_not_an_exception(year):
    """date(year, 6, 1) once raised here: the event went to the DLQ as hub.internal_error, not with its rule."""
    certificate = {"kind": "IELTS", "expires_on": date(2026, 5, 31)}
    problems = apply_rules("exam.registration", registration(exam_year=year, language_exemption=True,
                                                                exemption_certificate=certificate), CTX)
    assert {rule for _, rule in found(problems)} <= {"exam.candidate_age", "exam.exemption.certificate_expired"}
    assert problems


def test_case_ids_are_unique():
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------------------------
# RULES completeness: every id the module can emit is documented, and every documented id is tested.


def _emitted_rule_literals() -> set[str]:
    """Every rule id the modules pass to Problem(...) or Problem.at(...), read from their source."""
    ids = set()
    for module in (rules, rules.common, rules.school, rules.enrollment, rules.exam):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Call) and _is_problem(node.func):
                rule = node.args[1] if len(node.args) > 1 else next(k.value for k in node.keywords if k.arg == "rule")
                if isinstance(rule, ast.Constant):
                    ids.add(rule.value)
                else:  # a rule passed in by a caller: collect the literals the callers pass
                    assert isinstance(rule, ast.Name), ast.dump(rule)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_class_name":
                ids.add(node.args[3].value)
    return ids


def _is_problem(func: ast.expr) -> bool:
    """`Problem` or `Problem.at` (the constructor that writes the path once)."""
    if isinstance(func, ast.Attribute) and func.attr == "at":
        func = func.value
    return isinstance(func, ast.Name) and func.id == "Problem"


def test_every_emittable_rule_is_documented():
    assert _emitted_rule_literals() <= set(RULES)


def test_every_documented_rule_is_emitted_by_a_test():
    emitted = set()
    for _, builder, overrides, _, _ in CASES:
        entity, build = BUILDERS[builder]
        for p in apply_rules(entity, build(**overrides), CTX):
            assert p.rule in RULES, p
            emitted.add(p.rule)
    assert emitted == set(RULES)
    assert _emitted_rule_literals() == set(RULES)


def test_rule_ids_are_stable_lowercase_dotted():
    for rule, description in RULES.items():
        assert rule == rule.lower() and "." in rule and " " not in rule
        assert description and "\n" not in description


# --------------------------------------------------------------------------------------------
# Specific behaviour.


@pytest.mark.parametrize("sent", ["0912345678", "+84912345678"])
def test_mobile_phones_are_rewritten_to_plus_84(sent):
    record = student(guardian_phone=sent)
    assert apply_rules("school.student", record, CTX) == []
    assert record["guardian_phone"] == "+84912345678"
    record = teacher(phone=sent)
    assert apply_rules("school.teacher", record, CTX) == []
    assert record["phone"] == "+84912345678"


def test_every_mobile_prefix_is_accepted():
    for prefix in "35789":
        record = school(phone=f"0{prefix}12345678")
        assert apply_rules("school.school", record, CTX) == []
        assert record["phone"] == f"+84{prefix}12345678"


def test_invalid_phone_is_left_as_sent():
    record = student(guardian_phone="0212345678")
    apply_rules("school.student", record, CTX)
    assert record["guardian_phone"] == "0212345678"


def test_old_hai_duong_id_is_valid_for_a_hai_phong_learner():
    # After the 2025 merger a Hải Phòng learner may carry 030 (old Hải Dương).
    record = student(student_id="030309001234", address={"province_code": "31", "ward_code": "10525", "street": None})
    assert apply_rules("school.student", record, CTX) == []
    assert apply_rules("exam.registration", registration(national_id="030208001122"), CTX) == []


@pytest.mark.parametrize("name", ["Trần Văn Hòa", "Trần Văn Hoà", "Nguyễn Thị Thủy", "Nguyễn Thị Thuỷ"])
def test_old_and_new_tone_placement_are_both_valid(name):
    assert apply_rules("school.student", student(full_name=name), CTX) == []


@pytest.mark.parametrize("name", ["H'Hen Niê", "H’Hen Niê", "Nguyễn-Trần Minh Anh", "Lò Văn Pấng", "A" * 100])
def test_names_with_apostrophes_hyphens_and_at_the_limit_are_valid(name):
    assert apply_rules("exam.registration", registration(full_name=name), CTX) == []


def test_decomposed_marks_are_letters_too():
    # Should an NFD name slip through, its combining marks are still accepted.
    assert apply_rules("school.student", student(full_name="Nguye\u0302\u0303n An"), CTX) == []


def test_the_council_comes_from_the_context():
    assert apply_rules("exam.registration", registration(council_code="01"), RuleContext(council_code="01")) == []


def test_the_home_province_comes_from_the_context():
    record = school(province_code="22", ward_code=WARD_QUANG_NINH)
    assert apply_rules("school.school", record, RuleContext(home_province="22")) == []


def test_graduated_candidate_may_register_any_one_to_four_subjects():
    record = registration(**GRADUATED, subjects=["CHEMISTRY", "BIOLOGY"], foreign_language=None)
    assert apply_rules("exam.registration", record, CTX) == []


def test_valid_exemption_is_accepted():
    record = registration(language_exemption=True, exemption_certificate={"kind": "IELTS", "expires_on": date(2026, 6, 1)})
    assert apply_rules("exam.registration", record, CTX) == []


def test_comment_graded_subject_with_pass_result_is_valid():
    record = score(subject="PE", score=None, pass_result="FAIL", kind="FINAL", seq=1)
    assert apply_rules("school.score", record, CTX) == []


def test_not_admitted_without_admission_fields_is_valid():
    record = enrollment_result(outcome="NOT_ADMITTED", admitted_school_code=None, matched_rank=None)
    assert apply_rules("enrollment.result", record, CTX) == []


def test_failed_candidate_may_have_any_scores():
    record = exam_result(passed=False, graduation_score=Decimal("3.10"), scores={"MATH": Decimal("0.75")})
    assert apply_rules("exam.result", record, CTX) == []


def test_grade_1_applicant_aged_six_is_valid():
    record = application_grade6(level="GRADE_1", applicant_id="031220004567", date_of_birth=date(2020, 1, 8),
                                current_school_code=None)
    assert apply_rules("enrollment.application", record, CTX) == []


def test_geography_comes_from_vietnam_provinces():
    geo = rules.common.geography()
    assert len(geo.provinces) == 34
    assert geo.provinces["31"].endswith("Hải Phòng")
    hai_phong = [code for code, (province, _) in geo.wards.items() if province == "31"]
    assert hai_phong and all(len(code) == 5 and code.isdigit() for code in hai_phong)
    assert {WARD_HONG_BANG, WARD_NGO_QUYEN, WARD_LE_CHAN} <= set(hai_phong)
    assert geo.wards[WARD_QUANG_NINH][0] == "22"


def test_messages_name_the_field_and_say_expected_and_got():
    problems = apply_rules("exam.registration", registration(date_of_birth=date(2007, 5, 1)), CTX)
    assert [p.message for p in problems] == [
        "data.national_id: birth year digits 08 (2008) disagree with date_of_birth 2007-05-01"
    ]
