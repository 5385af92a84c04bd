"""China Standard Time: the time applicants and staff read (dates, months, deadlines). Stored
times are UTC; they are shown and counted in this zone."""

from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")
