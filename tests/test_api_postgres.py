"""The API end to end on PostgreSQL: the same tests as on the SQLite default, run against
`tocsin serve --database postgresql://…` on the session's throwaway cluster (tests that
reach into the SQLite file directly stay SQLite-only)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conftest import Server, server_store
from test_api_checks import (
    test_a_body_with_every_field_of_every_type_at_zero_values_is_accepted,
    test_another_organisation_cannot_see_or_change_a_check,
    test_every_check_type_is_created_and_read_back,
    test_filters_and_paging,
    test_incidents_and_csv_exports_for_a_date_range,
    test_put_replaces_patch_changes_only_what_is_sent_and_delete_removes,
)
from test_api_identity import (
    test_members_are_added_with_roles_and_each_role_does_only_its_part,
    test_one_organisation_cannot_read_change_or_learn_of_anothers,
    test_organisations_are_created_read_renamed_and_deleted_with_confirmation,
    test_personal_access_tokens_are_shown_once_and_revoked_at_once,
    test_projects_crud_and_the_default_project_stays,
)
from test_api_incidents import (
    sse,
    test_an_outage_opens_an_incident_acknowledged_annotated_and_resolved_by_recovery,
    test_other_organisations_and_viewers,
    test_time_filters_and_paging,
)
from test_api_live import test_another_organisation_sees_none_of_the_events
from test_api_maintenance import (
    test_a_window_is_created_read_listed_changed_and_deleted,
    test_organisations_cannot_see_or_touch_each_others_windows,
)
from test_api_pings import (
    test_ping_answers_are_plain_text_and_need_no_token,
    test_pings_drive_a_heartbeat_check_up_late_and_down,
)
from test_server import (
    test_a_check_follows_its_target_down_and_up,
    test_bad_input_is_refused_with_the_field_and_nothing_is_stored,
    test_list_get_delete_and_trailing_slashes,
    test_results_survive_a_restart_and_checks_keep_their_phase,
)
from tocsin.store import Store


@pytest.fixture
def server(tmp_path: Path, pg_url: str) -> Iterator[Server]:
    s = Server(tmp_path / "data")
    s.start("--database", pg_url)
    yield s
    s.kill()


@pytest.fixture
async def store(server: Server) -> AsyncIterator[Store]:
    """The running server's own database, with its key."""
    s = server_store(server)
    await s.open()
    yield s
    await s.close()


__all__ = [
    "sse",
    "test_a_body_with_every_field_of_every_type_at_zero_values_is_accepted",
    "test_a_check_follows_its_target_down_and_up",
    "test_a_window_is_created_read_listed_changed_and_deleted",
    "test_an_outage_opens_an_incident_acknowledged_annotated_and_resolved_by_recovery",
    "test_another_organisation_cannot_see_or_change_a_check",
    "test_another_organisation_sees_none_of_the_events",
    "test_bad_input_is_refused_with_the_field_and_nothing_is_stored",
    "test_every_check_type_is_created_and_read_back",
    "test_filters_and_paging",
    "test_incidents_and_csv_exports_for_a_date_range",
    "test_list_get_delete_and_trailing_slashes",
    "test_members_are_added_with_roles_and_each_role_does_only_its_part",
    "test_one_organisation_cannot_read_change_or_learn_of_anothers",
    "test_organisations_are_created_read_renamed_and_deleted_with_confirmation",
    "test_organisations_cannot_see_or_touch_each_others_windows",
    "test_other_organisations_and_viewers",
    "test_personal_access_tokens_are_shown_once_and_revoked_at_once",
    "test_ping_answers_are_plain_text_and_need_no_token",
    "test_pings_drive_a_heartbeat_check_up_late_and_down",
    "test_projects_crud_and_the_default_project_stays",
    "test_put_replaces_patch_changes_only_what_is_sent_and_delete_removes",
    "test_results_survive_a_restart_and_checks_keep_their_phase",
    "test_time_filters_and_paging",
]
