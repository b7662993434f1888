"""Reporting: building, writing and mailing reports, and the dashboard's figures.

`service` is the door every report request goes through (CLI, console, schedule, patch cycle);
`report_data` holds the reads beyond the missing-patch rows, `report_schedule` the weekly
schedule and `mail` the SMTP delivery, each with its settings in the database.
"""
