"""When a Logic Apps Recurrence trigger fires, as Microsoft's "Schedule and run recurring
workflows" and the Recurrence trigger's reference describe it.

- ``frequency`` Second, Minute, Hour, Day, Week or Month (any case), every ``interval`` of them;
- without ``startTime`` the first recurrence runs at once, when the workflow is saved or
  deployed, "despite your trigger's recurrence setup"; with one, the first runs at the start
  time (or, with a schedule, at the first scheduled time on or after it), and a start time
  in the past counts the recurrences from it;
- without a schedule, each later recurrence is one interval after the last; with a schedule
  (``hours`` and ``minutes`` for Day and Week, ``weekDays`` for Week, ``minutes`` for Hour,
  ``monthDays`` for Month), the recurrences are those times, on the days, weeks or months the
  interval counts from the start (or the save) day; a schedule field left out takes the start
  time's (or the save time's) value;
- ``timeZone`` (a Windows time zone name, as Logic Apps takes it) places the start time and
  the schedule's hours; without it they are UTC.

Everything here is pure: ``first_fire`` and ``next_fire`` take the times they need, and
``problems`` says what the functions cannot compute (an unknown time zone, monthly
occurrences), for the engine's refusal.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

FREQUENCIES = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800, "month": None}
WEEK_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
#: the Windows time zone names Logic Apps takes, for the zones the twin knows (CLDR's mapping)
WINDOWS_ZONES = {
    "UTC": "UTC", "Coordinated Universal Time": "UTC", "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin", "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest", "Central European Standard Time": "Europe/Warsaw",
    "E. Europe Standard Time": "Europe/Chisinau", "FLE Standard Time": "Europe/Kiev",
    "Eastern Standard Time": "America/New_York", "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver", "Pacific Standard Time": "America/Los_Angeles",
    "E. South America Standard Time": "America/Sao_Paulo", "India Standard Time": "Asia/Kolkata",
    "China Standard Time": "Asia/Shanghai", "Tokyo Standard Time": "Asia/Tokyo",
    "Singapore Standard Time": "Asia/Singapore", "AUS Eastern Standard Time": "Australia/Sydney",
}


def problems(recurrence: Any) -> list[str]:
    """What the recurrence asks that these functions cannot compute, or that is not valid."""
    if not isinstance(recurrence, dict):
        return ["recurrence must be an object with frequency and interval"]
    out = []
    freq = str(recurrence.get("frequency", "")).lower()
    if freq not in FREQUENCIES:
        out.append(f"frequency {recurrence.get('frequency')!r} is not Second, Minute, Hour, Day, Week or Month")
    interval = recurrence.get("interval", 1)
    if not isinstance(interval, str) and (not isinstance(interval, int) or interval < 1):
        out.append(f"interval {interval!r} must be a whole number from 1")
    zone = recurrence.get("timeZone")
    if zone is not None and zone not in WINDOWS_ZONES:
        out.append(f"timeZone {zone!r} is not one the engine knows ({', '.join(sorted(WINDOWS_ZONES))})")
    schedule = recurrence.get("schedule") or {}
    if "monthlyOccurrences" in schedule:
        out.append("schedule.monthlyOccurrences is not implemented by the engine")
    if schedule and freq in ("second", "minute"):
        out.append(f"a schedule cannot go with frequency {recurrence.get('frequency')}")
    bad_days = [d for d in schedule.get("weekDays") or [] if str(d).capitalize() not in WEEK_DAYS]
    if bad_days:
        out.append(f"schedule.weekDays {bad_days} are not days of the week")
    return out


def first_fire(recurrence: dict, saved: datetime) -> datetime:
    """When the first recurrence runs, for a trigger saved (deployed) at ``saved`` (UTC)."""
    start = _start(recurrence)
    if start is None:
        return saved  # "the first recurrence runs immediately when you save or deploy"
    if start > saved:
        return start if not recurrence.get("schedule") else next_fire(recurrence, start - timedelta(seconds=1), saved)
    return next_fire(recurrence, saved, saved)


def next_fire(recurrence: dict, after: datetime, saved: datetime) -> datetime:
    """The first recurrence strictly after ``after`` (UTC), for a trigger saved at ``saved``."""
    freq = str(recurrence["frequency"]).lower()
    interval = int(recurrence.get("interval", 1))
    start = _start(recurrence)
    if not recurrence.get("schedule"):
        if start is None:  # "based on the last run time"
            return _add(after, freq, interval)
        k = max(0, _intervals_between(start, after, freq, interval))  # counted from the start: none drifts
        t = _add(start, freq, interval * k)
        while t <= after:
            k += 1
            t = _add(start, freq, interval * k)
        return t
    return _scheduled(recurrence, after, start or saved, freq, interval)


def _scheduled(recurrence: dict, after: datetime, base_utc: datetime, freq: str, interval: int) -> datetime:
    tz = _zone(recurrence)
    base = base_utc.astimezone(tz)
    schedule = recurrence["schedule"]
    hours = sorted(schedule.get("hours") or [base.hour]) if freq != "hour" else list(range(24))
    minutes = sorted(schedule.get("minutes") or [base.minute])
    week_days = {WEEK_DAYS.index(str(d).capitalize()) for d in schedule.get("weekDays") or [WEEK_DAYS[base.weekday()]]}
    month_days = set(schedule.get("monthDays") or [base.day])
    day = after.astimezone(tz).date()
    for _ in range(interval * 400 + 800):
        if _day_counts(day, base.date(), freq, interval, week_days, month_days):
            for h in hours:
                if freq == "hour" and ((day - base.date()).days * 24 + h - base.hour) % interval:
                    continue
                for m in minutes:
                    t = datetime(day.year, day.month, day.day, h, m, tzinfo=tz).astimezone(timezone.utc)
                    if t > after and t >= base_utc.replace(second=0, microsecond=0):
                        return t
        day += timedelta(days=1)
    raise ValueError(f"the recurrence {recurrence} never fires")


def _day_counts(day: date, base: date, freq: str, interval: int, week_days: set, month_days: set) -> bool:
    if freq == "day":
        return (day - base).days % interval == 0
    if freq == "week":
        weeks = ((day - timedelta(days=day.weekday())) - (base - timedelta(days=base.weekday()))).days // 7
        return day.weekday() in week_days and weeks % interval == 0
    if freq == "month":
        return day.day in month_days and ((day.year - base.year) * 12 + day.month - base.month) % interval == 0
    return True


def _start(recurrence: dict) -> datetime | None:
    text = recurrence.get("startTime")
    if not text:
        return None
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=_zone(recurrence))
    return value.astimezone(timezone.utc)


def _zone(recurrence: dict) -> ZoneInfo:
    """Where the start time and the schedule's hours are: the recurrence's timeZone, else UTC."""
    return ZoneInfo(WINDOWS_ZONES.get(recurrence.get("timeZone") or "UTC", "UTC"))


def _add(t: datetime, freq: str, n: int) -> datetime:
    if FREQUENCIES[freq] is not None:
        return t + timedelta(seconds=FREQUENCIES[freq] * n)
    months = t.year * 12 + t.month - 1 + n
    y, m = divmod(months, 12)
    for day in range(t.day, 27, -1):  # the 31st of a 30-day month is its last day
        try:
            return t.replace(year=y, month=m + 1, day=day)
        except ValueError:
            continue
    return t.replace(year=y, month=m + 1, day=28)


def _intervals_between(start: datetime, after: datetime, freq: str, interval: int) -> int:
    seconds = FREQUENCIES[freq] or 31 * 86400  # a month at most: never past the one wanted
    return int((after - start).total_seconds() // (seconds * interval))
