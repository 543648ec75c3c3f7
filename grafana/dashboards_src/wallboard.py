"""Sales floor wallboard: a TV in kiosk mode, big tiles, no template variables."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.models import dashboard as dashboard_model

from .panels import (
    CURRENCY_UNIT,
    SLA_SECONDS,
    TAGS,
    PanelBuilder,
    Query,
    big_stat,
    finish,
    leaderboard,
    links,
    section,
)

__all__ = ["UID", "build"]

UID = "sales-floor-wallboard"
AT_RISK = SLA_SECONDS * 0.8
TODAY = 'window="today"'


def _team_mean(metric: str) -> str:
    """A per-rep mean or share made team-wide, weighted by each rep's first contacts today."""
    contacts = f"sum by (rep) (sales_first_contacts{{{TODAY}}})"
    per_rep = f"max by (rep) ({metric}{{{TODAY}}})"
    return f"sum({per_rep} * {contacts}) / sum(sales_first_contacts{{{TODAY}}})"


def _speed_to_lead() -> list[PanelBuilder]:
    waiting_steps = [(None, "green"), (5, "orange"), (10, "red")]
    wait_steps = [(None, "green"), (AT_RISK, "orange"), (SLA_SECONDS, "red")]
    return [
        big_stat(
            "Leads waiting for contact",
            [Query("sum(sales_leads_awaiting_contact) or vector(0)")],
            "none",
            waiting_steps,
            "Live: leads with no contact attempt yet, all reps.",
        ),
        big_stat(
            "Waiting past SLA",
            [Query("sum(sales_leads_awaiting_contact_over_sla) or vector(0)")],
            "none",
            [(None, "green"), (1, "red")],
            "Live: waiting leads already past their first-contact SLA.",
        ),
        big_stat(
            "Oldest wait",
            [Query("max(sales_oldest_awaiting_contact_seconds) or vector(0)")],
            "s",
            wait_steps,
            f"Live: age of the oldest lead still waiting. SLA {SLA_SECONDS} s.",
        ),
        big_stat(
            "Avg response today",
            [Query(_team_mean("sales_response_time_avg_seconds"))],
            "s",
            wait_steps,
            "Lead created -> first contact, mean over today's first contacts of all reps "
            f"(each rep's mean weighted by their first contacts). SLA {SLA_SECONDS} s.",
        ),
        big_stat(
            "Slowest rep, median response",
            [Query(f'max(sales_response_time_seconds{{{TODAY}, quantile="0.5"}})')],
            "s",
            wait_steps,
            "Today's median response time of the slowest rep: quantiles of different reps "
            f"cannot be merged into a team quantile. SLA {SLA_SECONDS} s.",
        ),
        big_stat(
            "Answered within SLA today",
            [Query(_team_mean("sales_responded_within_sla_ratio"))],
            "percentunit",
            [(None, "red"), (0.7, "orange"), (0.9, "green")],
            "Share of today's first contacts made within the SLA, all reps.",
        ),
    ]


def _activity() -> list[PanelBuilder]:
    return [
        leaderboard(
            "Contact attempts today",
            [Query(f"sort_desc(sum by (rep) (sales_contact_attempts{{{TODAY}}}))", "{{rep}}")],
            "none",
            [(None, "blue")],
            "Contact attempts per rep since midnight, all channels.",
        ),
        leaderboard(
            "Daily activity target",
            [Query("sort_desc(max by (rep) (sales_activity_target_ratio))", "{{rep}}")],
            "percentunit",
            [(None, "red"), (0.5, "orange"), (1, "green")],
            "Attempts today / the rep's daily target (reps with a configured target only).",
            maximum=1,
            no_value="No daily targets: set STREAMPROC_ACTIVITY_TARGETS",
        ),
        leaderboard(
            "Connect rate by channel today",
            [
                Query(
                    f"sum by (channel) (sales_contact_connects{{{TODAY}}}) "
                    f"/ sum by (channel) (sales_contact_attempts{{{TODAY}}})",
                    "{{channel}}",
                )
            ],
            "percentunit",
            [(None, "red"), (0.15, "orange"), (0.3, "green")],
            "Connects / attempts per channel over all reps (summed, not an average of ratios).",
            maximum=1,
        ),
    ]


def _deals() -> list[PanelBuilder]:
    neutral = [(None, "blue")]
    return [
        big_stat(
            "Deals won today",
            [Query(f"sum(sales_deals_won{{{TODAY}}}) or vector(0)")],
            "none",
            neutral,
            "Deals closed won since midnight.",
            width=6,
        ),
        big_stat(
            "Revenue won today",
            [Query(f"sum(sales_revenue_won{{{TODAY}}}) or vector(0)")],
            CURRENCY_UNIT,
            neutral,
            "Sum of the deal values closed won since midnight.",
            width=6,
        ),
        big_stat(
            "Weighted forecast",
            [Query("sum(sales_forecast_value) or vector(0)")],
            CURRENCY_UNIT,
            neutral,
            "Live: open deal values x their win probability.",
            width=6,
        ),
        big_stat(
            "Email open rate today",
            [Query(f"sum(sales_emails_opened{{{TODAY}}}) / sum(sales_emails_sent{{{TODAY}}})")],
            "percentunit",
            [(None, "red"), (0.2, "orange"), (0.35, "green")],
            "Of the emails sent today, the share opened so far.",
            width=6,
        ),
    ]


def _quota() -> list[PanelBuilder]:
    month = 'measure="revenue_won", period="month"'
    return [
        leaderboard(
            "Quota this month",
            [
                Query(
                    f'sort_desc(max by (rep) (sales_target_attainment_ratio{{{month}, rep!=""}}))',
                    "{{rep}}",
                )
            ],
            "percentunit",
            [(None, "red"), (0.7, "orange"), (1.0, "green")],
            "Revenue won this month / each rep's monthly revenue target.",
            width=12,
            no_value="No revenue targets: streamproc targets set",
        ),
        leaderboard(
            "Team revenue vs target this month",
            [
                Query('sum(sales_revenue_won{window="month"}) or vector(0)', "won"),
                Query(f'max(sales_target{{{month}, rep=""}})', "target"),
            ],
            CURRENCY_UNIT,
            [(None, "blue")],
            "Revenue won this month, all reps, and the team's monthly revenue target.",
            width=12,
            no_value="No team target: streamproc targets set",
        ),
    ]


def build() -> dashboard_model.Dashboard:
    """The wallboard: refresh 10 s, dark, no variables (an unattended screen)."""
    board = (
        dashboard_builder.Dashboard("Sales floor")
        .uid(UID)
        .description(
            f"Open as /d/{UID}?orgId=1&kiosk&refresh=10s&theme=dark on the sales floor TV."
        )
        .tags([*TAGS, "sales", "wallboard"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .readonly()
        .timepicker(dashboard_builder.TimePicker().hidden(True))
        .links(links())
    )
    board = section(board, "Speed to lead", _speed_to_lead())
    board = section(board, "Activity", _activity())
    board = section(board, "Deals", _deals())
    return finish(section(board, "Quota", _quota()))
