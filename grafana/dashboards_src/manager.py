"""Sales manager dashboard: trends per rep, channel, stage and source, with filters."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import dashboard as dashboard_model

from .panels import (
    CURRENCY_UNIT,
    SLA_SECONDS,
    TAGS,
    PanelBuilder,
    Query,
    big_stat,
    choice,
    finish,
    leaderboard,
    links,
    merged_table,
    section,
    trend,
    variable,
)

__all__ = ["UID", "build"]

UID = "sales-manager"
W = 'window="$window"'
R = 'rep=~"$rep"'
S = 'source=~"$source"'
P = 'window="$period"'  # the calendar period picked (month, quarter, year)
LAST = 'window="last_$period"'  # the one before it, whole
NEUTRAL = [(None, "blue")]
SHARE = [(None, "red"), (0.5, "orange"), (0.8, "green")]


def _speed_to_lead() -> list[PanelBuilder]:
    return [
        trend(
            "Mean response time by rep",
            [Query(f"max by (rep) (sales_response_time_avg_seconds{{{W}, {R}}})", "{{rep}}")],
            "s",
            f"Lead created -> first contact, mean per rep. Dashed: the SLA, {SLA_SECONDS} s.",
            sla_line=SLA_SECONDS,
        ),
        trend(
            "Response time quantiles by rep",
            [
                Query(
                    f"max by (rep, quantile) (sales_response_time_seconds{{{W}, {R}}})",
                    "{{rep}} p{{quantile}}",
                )
            ],
            "s",
            "Median (0.5) and 0.9 quantile of each rep's response times in the window.",
            sla_line=SLA_SECONDS,
        ),
        trend(
            "Answered within SLA by rep",
            [Query(f"max by (rep) (sales_responded_within_sla_ratio{{{W}, {R}}})", "{{rep}}")],
            "percentunit",
            "Share of the rep's first contacts made within the SLA.",
            width=8,
        ),
        trend(
            "Leads created by source",
            [Query(f"sum by (source) (sales_leads_created{{{W}, {R}, {S}}})", "{{source}}")],
            "none",
            "Leads created in the window, by lead source.",
            width=8,
        ),
        trend(
            "Leads waiting now by rep",
            [
                Query(
                    f"sum by (rep) (sales_leads_awaiting_contact{{{R}, {S}}})", "{{rep}} waiting"
                ),
                Query(
                    f"sum by (rep) (sales_leads_awaiting_contact_over_sla{{{R}}})",
                    "{{rep}} past SLA",
                ),
            ],
            "none",
            "Live: leads with no contact attempt yet, and those already past their SLA.",
            width=8,
        ),
    ]


def _activity() -> list[PanelBuilder]:
    return [
        trend(
            "Attempts and connects by channel",
            [
                Query(
                    f"sum by (channel) (sales_contact_attempts{{{W}, {R}}})", "{{channel}} attempts"
                ),
                Query(
                    f"sum by (channel) (sales_contact_connects{{{W}, {R}}})", "{{channel}} connects"
                ),
            ],
            "none",
            "Contact attempts and the connected ones, per channel, in the window.",
            width=8,
        ),
        trend(
            "Connect rate by channel",
            [
                Query(
                    f"sum by (channel) (sales_contact_connects{{{W}, {R}}}) "
                    f"/ sum by (channel) (sales_contact_attempts{{{W}, {R}}})",
                    "{{channel}}",
                )
            ],
            "percentunit",
            "Connects / attempts over the selected reps (summed, not an average of ratios).",
            width=8,
        ),
        leaderboard(
            "Connect rate by rep and channel",
            [
                Query(
                    f"sort_desc(max by (rep, channel) (sales_connect_ratio{{{W}, {R}}}))",
                    "{{rep}} / {{channel}}",
                )
            ],
            "percentunit",
            SHARE,
            "Each rep's connect ratio per channel in the window.",
            height=8,
            maximum=1,
        ),
        leaderboard(
            "Activity vs daily target",
            [Query(f"sort_desc(max by (rep) (sales_activity_target_ratio{{{R}}}))", "{{rep}}")],
            "percentunit",
            [(None, "red"), (0.5, "orange"), (1, "green")],
            "Attempts today / the rep's daily target (reps with a configured target only).",
            width=24,
            height=6,
            maximum=1,
            no_value="No daily targets: set STREAMPROC_ACTIVITY_TARGETS",
        ),
    ]


def _pipeline() -> list[PanelBuilder]:
    return [
        leaderboard(
            "Stage entries",
            [Query(f"sort_desc(sum by (stage) (sales_stage_entries{{{W}}}))", "{{stage}}")],
            "none",
            NEUTRAL,
            "Funnel: deals that entered each stage in the window.",
            width=6,
        ),
        leaderboard(
            "Stage conversion",
            [Query(f"max by (stage) (sales_stage_conversion_ratio{{{W}}})", "{{stage}}")],
            "percentunit",
            SHARE,
            "Of the deals that left the stage in the window, the share that moved forward.",
            width=6,
            maximum=1,
        ),
        leaderboard(
            "Stage dwell time",
            [
                Query(
                    f"max by (stage, quantile) (sales_stage_dwell_seconds{{{W}}})",
                    "{{stage}} p{{quantile}}",
                )
            ],
            "s",
            NEUTRAL,
            "Median and 0.9 quantile of the time spent in each stage by the deals that left it.",
            width=6,
        ),
        leaderboard(
            "Open pipeline by stage",
            [Query(f"sort_desc(sum by (stage) (sales_open_pipeline_value{{{R}}}))", "{{stage}}")],
            CURRENCY_UNIT,
            NEUTRAL,
            "Live: sum of the deal values of open deals, by stage.",
            width=6,
        ),
    ]


def _deals() -> list[PanelBuilder]:
    return [
        leaderboard(
            "Win ratio by lead source",
            [Query(f"sort_desc(max by (source) (sales_win_ratio{{{W}, {S}}}))", "{{source}}")],
            "percentunit",
            [(None, "red"), (0.2, "orange"), (0.4, "green")],
            "Won / (won + lost) closed in the window: lead-source quality.",
            maximum=1,
        ),
        trend(
            "Lost deals by reason",
            [Query(f"sum by (reason) (sales_deals_lost{{{W}, {R}}})", "{{reason}}")],
            "none",
            "Deals closed lost in the window, by lost reason.",
            width=8,
            height=10,
        ),
        leaderboard(
            "Revenue won by rep",
            [Query(f"sort_desc(sum by (rep) (sales_revenue_won{{{W}, {R}}}))", "{{rep}}")],
            CURRENCY_UNIT,
            NEUTRAL,
            "Sum of the deal values closed won in the window.",
        ),
        big_stat(
            "Revenue per rep",
            [Query(f"max(sales_revenue_per_rep{{{W}}})")],
            CURRENCY_UNIT,
            NEUTRAL,
            "Revenue won / reps with any event in the window (all reps).",
            height=8,
        ),
        big_stat(
            "Upsell share",
            [Query(f"max(sales_upsell_ratio{{{W}}})")],
            "percentunit",
            NEUTRAL,
            "Share of the deals won in the window that came from existing customers.",
            height=8,
        ),
        leaderboard(
            "Deals won by source",
            [Query(f"sort_desc(sum by (source) (sales_deals_won{{{W}, {R}, {S}}}))", "{{source}}")],
            "none",
            NEUTRAL,
            "Deals closed won in the window, by lead source.",
            height=8,
        ),
        leaderboard(
            "Weighted forecast by rep",
            [Query(f"sort_desc(sum by (rep) (sales_forecast_value{{{R}}}))", "{{rep}}")],
            CURRENCY_UNIT,
            NEUTRAL,
            "Live: open deal values x win probability.",
            height=8,
        ),
    ]


def _email() -> list[PanelBuilder]:
    opened = f"sum(sales_emails_opened{{{W}, {R}}})"
    clicked = f"sum(sales_emails_clicked{{{W}, {R}}})"
    sent = f"sum(sales_emails_sent{{{W}, {R}}})"
    return [
        trend(
            "Email open and click rate by rep",
            [
                Query(f"max by (rep) (sales_email_open_ratio{{{W}, {R}}})", "{{rep}} opened"),
                Query(f"max by (rep) (sales_email_click_ratio{{{W}, {R}}})", "{{rep}} clicked"),
            ],
            "percentunit",
            "Of the emails each rep sent in the window, the share opened and clicked so far.",
        ),
        trend(
            "Email open and click rate, selected reps",
            [Query(f"{opened} / {sent}", "opened"), Query(f"{clicked} / {sent}", "clicked")],
            "percentunit",
            "Opened / sent and clicked / sent, summed over the selected reps.",
        ),
    ]


def _costs() -> list[PanelBuilder]:
    by_source = f'{W}, {S}, source!=""'  # the team's series has no source label
    return [
        leaderboard(
            "Cost per lead by source",
            [
                Query(
                    f"sort_desc(max by (source) (sales_cost_per_lead{{{by_source}}}))", "{{source}}"
                )
            ],
            CURRENCY_UNIT,
            NEUTRAL,
            "Marketing cost / leads created in the window, by the source the cost bought.",
        ),
        leaderboard(
            "Cost per new customer by source",
            [
                Query(
                    f"sort_desc(max by (source) (sales_cost_per_new_customer{{{by_source}}}))",
                    "{{source}}",
                )
            ],
            CURRENCY_UNIT,
            NEUTRAL,
            "Marketing cost / new customers won in the window (cost per conversion).",
        ),
        big_stat(
            "Cost per lead, team",
            [Query(f'max(sales_cost_per_lead{{{W}, source=""}})')],
            CURRENCY_UNIT,
            NEUTRAL,
            "All marketing cost / all leads created in the window.",
            height=5,
        ),
        big_stat(
            "Cost per new customer, team",
            [Query(f'max(sales_cost_per_new_customer{{{W}, source=""}})')],
            CURRENCY_UNIT,
            NEUTRAL,
            "All marketing cost / all new customers won in the window.",
            height=5,
        ),
    ]


def _customers() -> list[PanelBuilder]:
    return [
        merged_table(
            "Winning product combinations",
            [
                Query(f"sort_desc(sum by (product_a, product_b) (sales_product_pair_wins{{{W}}}))"),
                Query(f"max by (product_a, product_b) (sales_product_attach_ratio{{{W}}})"),
            ],
            {
                "product_a": "Product A",
                "product_b": "Product B",
                "Value #A": "Won together",
                "Value #B": "Attach ratio (A -> B)",
            },
            "The busiest pairs of products won in one deal, and of the deals won with A, the "
            "share that also had B.",
        ),
        trend(
            "Active and churned customers by segment",
            [
                Query("sum by (segment) (sales_customers_active)", "{{segment}} active"),
                Query(f"sum by (segment) (sales_customers_churned{{{W}}})", "{{segment}} churned"),
            ],
            "none",
            "Live: customers won and not churned since; churn events in the window.",
        ),
        leaderboard(
            "Churn ratio by segment",
            [Query(f"sort_desc(max by (segment) (sales_churn_ratio{{{W}}}))", "{{segment}}")],
            "percentunit",
            [(None, "green"), (0.03, "orange"), (0.1, "red")],
            "Customers churned in the window / customers active at its start.",
            maximum=1,
        ),
        leaderboard(
            "Profit by segment",
            [Query(f"sort_desc(sum by (segment) (sales_customer_profit{{{W}}}))", "{{segment}}")],
            CURRENCY_UNIT,
            [(None, "red"), (0, "green")],
            "Revenue won - costs of the segment and its customers, in the window.",
        ),
        big_stat(
            "NPS, team",
            [Query(f'max(sales_nps_score{{{W}, rep=""}})')],
            "none",
            [(None, "red"), (0, "orange"), (30, "green")],
            "% promoters - % detractors of the answers in the window, -100 to 100.",
            width=8,
            height=10,
        ),
        leaderboard(
            "NPS answers: promoters, passives, detractors",
            [
                Query(
                    f"sum by (category) (sales_nps_responses{{{W}}}) "
                    f"/ scalar(sum(sales_nps_responses{{{W}}}))",
                    "{{category}}",
                )
            ],
            "percentunit",
            NEUTRAL,
            "The three shares of the answers in the window (promoters 9-10, passives 7-8, "
            "detractors 0-6).",
            width=12,
            maximum=1,
        ),
        leaderboard(
            "NPS by rep",
            [Query(f'sort_desc(max by (rep) (sales_nps_score{{{W}, {R}, rep!=""}}))', "{{rep}}")],
            "none",
            [(None, "red"), (0, "orange"), (30, "green")],
            "NPS of the answers about each rep's customers (the rep of the first won deal).",
            width=12,
        ),
    ]


def _this_vs_last(metric: str, by: str = "") -> list[Query]:
    """The period picked and the one before it, side by side."""
    group = f" by ({by})" if by else ""
    name = f"{{{{{by}}}}} " if by else ""
    return [
        Query(f"sum{group} ({metric}{{{P}, {R}}})", f"{name}this $period"),
        Query(f"sum{group} ({metric}{{{LAST}, {R}}})", f"{name}last $period"),
    ]


def _win_ratio(window: str) -> str:
    """Won / (won + lost) of the reps picked: from the split counts, exact over workers."""
    won = f"sum(sales_deals_won{{{window}, {R}}})"
    return f"{won} / ({won} + sum(sales_deals_lost{{{window}, {R}}}))"


def _mean_response(window: str) -> str:
    """The reps' mean response time, weighted by their first contacts."""
    contacts = f"sum by (rep) (sales_first_contacts{{{window}, {R}}})"
    per_rep = f"max by (rep) (sales_response_time_avg_seconds{{{window}, {R}}})"
    return f"sum({per_rep} * {contacts}) / sum(sales_first_contacts{{{window}, {R}}})"


def _periods() -> list[PanelBuilder]:
    neutral, quota = NEUTRAL, [(None, "red"), (0.7, "orange"), (1.0, "green")]
    return [
        leaderboard(
            "Revenue won: this vs last period",
            _this_vs_last("sales_revenue_won"),
            CURRENCY_UNIT,
            neutral,
            "Revenue won in the period picked (Period) and in the one before it, whole.",
            width=6,
            height=6,
        ),
        leaderboard(
            "New customers: this vs last period",
            _this_vs_last("sales_new_customers"),
            "none",
            neutral,
            "Deals won from leads that were not customers yet.",
            width=6,
            height=6,
        ),
        leaderboard(
            "Win ratio: this vs last period",
            [Query(_win_ratio(P), "this $period"), Query(_win_ratio(LAST), "last $period")],
            "percentunit",
            SHARE,
            "Won / (won + lost) of the deals the reps picked closed in the period.",
            width=6,
            height=6,
            maximum=1,
        ),
        leaderboard(
            "Response time: this vs last period",
            [Query(_mean_response(P), "this $period"), Query(_mean_response(LAST), "last $period")],
            "s",
            [(None, "green"), (SLA_SECONDS, "red")],
            "Lead created to first contact, mean over the reps picked.",
            width=6,
            height=6,
        ),
        leaderboard(
            "Leads per source: this vs last period",
            _this_vs_last("sales_leads_created", "source"),
            "none",
            neutral,
            "Leads created in the period picked and the one before, by lead source.",
            width=12,
        ),
        leaderboard(
            "Quota attainment by rep",
            [
                Query(
                    "sort_desc(max by (rep) (sales_target_attainment_ratio"
                    f'{{measure="revenue_won", period="$period", {R}, rep!=""}}))',
                    "{{rep}}",
                )
            ],
            "percentunit",
            quota,
            "Revenue won in the period / the rep's revenue_won target "
            "(streamproc targets set --measure revenue_won --period ...).",
            width=6,
            no_value="No revenue targets: streamproc targets set",
        ),
        leaderboard(
            "Forecast coverage",
            [
                Query(
                    'sort_desc(max by (rep) (sales_forecast_coverage_ratio{period="$period", '
                    f"{R}}}))",
                    "{{rep}}",
                )
            ],
            "percentunit",
            quota,
            "(Revenue won in the period + live weighted forecast) / the revenue_won target: "
            "is there enough pipeline to make quota (an empty name: the team).",
            width=6,
            no_value="No revenue targets: streamproc targets set",
        ),
    ]


def _conversion() -> list[PanelBuilder]:
    ratio = [(None, "red"), (0.2, "orange"), (0.4, "green")]
    return [
        leaderboard(
            "Win ratio per rep",
            [Query(f"sort_desc(max by (rep) (sales_rep_win_ratio{{{W}, {R}}}))", "{{rep}}")],
            "percentunit",
            ratio,
            "Won / (won + lost) of the deals each rep closed in the window.",
            width=6,
            maximum=1,
        ),
        leaderboard(
            "Win ratio per outreach channel",
            [Query(f"sort_desc(max by (channel) (sales_channel_win_ratio{{{W}}}))", "{{channel}}")],
            "percentunit",
            ratio,
            "Won / (won + lost) of the deals closed in the window, by the channel of the "
            "lead's first connected attempt (none: never connected).",
            width=6,
            maximum=1,
        ),
        leaderboard(
            "Response time per stage",
            [
                Query(
                    f"sort_desc(max by (stage) (sales_stage_response_time_avg_seconds{{{W}}}))",
                    "{{stage}}",
                )
            ],
            "s",
            NEUTRAL,
            "A deal entering the stage to the next rep activity on it (attempt or move to "
            "another stage), mean.",
            width=6,
        ),
        leaderboard(
            "Lost deals by reason: this vs last month",
            [
                Query(
                    f'sum by (reason) (sales_deals_lost{{window="month", {R}}})',
                    "{{reason}} this month",
                ),
                Query(
                    f'sum by (reason) (sales_deals_lost{{window="last_month", {R}}})',
                    "{{reason}} last month",
                ),
            ],
            "none",
            NEUTRAL,
            "Deals closed lost this month and last month, by lost reason.",
            width=6,
        ),
    ]


def _variables() -> list[Builder[dashboard_model.VariableModel]]:
    return [
        choice("period", "Period", ["month", "quarter", "year"]),
        variable("window", "Window", "label_values(sales_leads_created, window)", False, "today"),
        variable("rep", "Rep", "label_values(sales_leads_created, rep)"),
        variable("source", "Lead source", "label_values(sales_leads_created, source)"),
    ]


def build() -> dashboard_model.Dashboard:
    """The manager's dashboard: variables window, rep and source (no team: not a label)."""
    board = (
        dashboard_builder.Dashboard("Sales manager")
        .uid(UID)
        .description(
            "KPIs by rep, channel, stage and source. There is no team filter: team is not a "
            "label of the metric catalogue, so select the team's reps in Rep."
        )
        .tags([*TAGS, "sales"])
        .refresh("1m")
        .time("now-24h", "now")
        .timezone("browser")
        .readonly()
        .tooltip(dashboard_model.DashboardCursorSync.CROSSHAIR)
        .variables(_variables())
        .links(links())
    )
    board = section(board, "This period vs last, and quotas", _periods())
    board = section(board, "Conversion per rep, channel and stage", _conversion())
    board = section(board, "Speed to lead", _speed_to_lead())
    board = section(board, "Activity", _activity())
    board = section(board, "Pipeline", _pipeline())
    board = section(board, "Deals", _deals())
    board = section(board, "Email", _email())
    board = section(board, "Costs", _costs())
    return finish(section(board, "Customers, products and NPS", _customers()))
