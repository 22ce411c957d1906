"""Crontab schedules as APScheduler triggers (UTC), with crontab's meaning of both day fields."""

from __future__ import annotations

from typing import Any

WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")  # crontab's 0-7


def cron_weekdays(field: str) -> str:
    """A crontab day-of-week field with numbers turned into names.

    crontab counts 0 (or 7) = Sunday, APScheduler 3's CronTrigger counts 0 = Monday, so
    from_crontab("0 3 * * 0") would fire on Mondays; names mean the same in both.
    """
    if field == "*":
        return field
    days: list[str] = []
    for token in field.split(","):
        body, _, step = token.partition("/")
        low, _, high = body.partition("-")
        if body == "*":
            first, last = 0, 6
        elif low.isdigit() and (not high or high.isdigit()):
            first = int(low)
            last = int(high) if high else (6 if step else first)
        else:
            days.append(token)  # names (mon-fri) mean the same to APScheduler
            continue
        if not 0 <= first <= 7 or not 0 <= last <= 7:
            raise ValueError(f"day of week {token!r} out of range 0-7")
        if last < first:
            raise ValueError(f"day of week {token!r} runs backwards (for Friday to Monday write 5-7,1)")
        days.extend(WEEKDAY_NAMES[day] for day in range(first, last + 1, int(step) if step else 1))
    return ",".join(dict.fromkeys(days))


def crontab_trigger(schedule: str) -> Any:
    """The APScheduler trigger of a five-field crontab schedule (UTC); ValueError when it is not one."""
    # Imported here: APScheduler is only needed once a schedule is checked, not for every CLI start.
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields, got {len(fields)}")
    minute, hour, day, month, weekday = fields
    weekdays = cron_weekdays(weekday)
    if day.startswith("*") or weekday.startswith("*"):
        return CronTrigger.from_crontab(f"{minute} {hour} {day} {month} {weekdays}", timezone="UTC")
    # Both restricted: crontab fires when EITHER matches, APScheduler only when both do.
    return OrTrigger(
        [
            CronTrigger.from_crontab(f"{minute} {hour} {day} {month} *", timezone="UTC"),
            CronTrigger.from_crontab(f"{minute} {hour} * {month} {weekdays}", timezone="UTC"),
        ]
    )
