"""Realistic synthetic records of the seed systems, for the demo and the tests.

One generator for every source system around the hub (data dictionary §4):

- `ExamRegistrationSimulator` (`exam`): ingest envelopes of the exam registration system;
- `ExamRegistrationOutbox` (`outbox`): the same registrations written by that system into its
  own database with a transactional outbox (for the `outbox` connector);
- `SchoolManagementDatabase` (`smas`, with `smas_schema` and `smas_rows`): the school-management
  system (SMAS-like), a relational database of schools, classes, teachers, students, scores and
  term results (for the `sql` connector);
- `AdmissionPortal` (`admission`): the online admission portal, pushing signed JSON over HTTP (`http`);
- `SchoolSpreadsheets` (`sheets`): schools' CSV/XLSX mark-book exports (`file`).

`people` (names, personal IDs, phones, Vietnam time) and `marks` (subjects, the term calendar,
marks) are shared by all of them.
"""

from __future__ import annotations

# sign is the hub's own scheme (hub.contract.signing), re-exported for the portal's callers.
from hub.contract.signing import sign
from hub.demo.simulators.admission import AdmissionPortal
from hub.demo.simulators.exam import BAD_KINDS, ExamRegistrationSimulator
from hub.demo.simulators.outbox import ExamRegistrationOutbox, outbox_connector_config, outbox_metadata
from hub.demo.simulators.people import HAIPHONG_SCHOOLS, person_id, vietnamese_name
from hub.demo.simulators.sheets import (SPREADSHEET_BAD_KINDS, SPREADSHEET_SCORE_COLUMNS, SchoolSpreadsheets,
                                        file_connector_config)
from hub.demo.simulators.smas import SchoolManagementDatabase
from hub.demo.simulators.smas_schema import SMAS_BAD_KINDS, SMAS_TABLES, smas_connector_configs, smas_metadata

__all__ = [
    "BAD_KINDS",
    "HAIPHONG_SCHOOLS",
    "SMAS_BAD_KINDS",
    "SMAS_TABLES",
    "SPREADSHEET_BAD_KINDS",
    "SPREADSHEET_SCORE_COLUMNS",
    "AdmissionPortal",
    "ExamRegistrationOutbox",
    "ExamRegistrationSimulator",
    "SchoolManagementDatabase",
    "SchoolSpreadsheets",
    "file_connector_config",
    "outbox_connector_config",
    "outbox_metadata",
    "person_id",
    "sign",
    "smas_connector_configs",
    "smas_metadata",
    "vietnamese_name",
]
