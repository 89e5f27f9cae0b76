"""The site's views, grouped by who uses them: `student` (asking and a question's page), `teacher` (the
bank, reviews, missed questions), `runs` (admins: batch precompute) and `api` (the JSON API). Thin:
permission (`tutor.permissions`) -> form -> one service -> response; `tutor.errors` maps what they raise.
"""
