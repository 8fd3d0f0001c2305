"""The online report: events attributed to the lists shown (``attribution``), online metrics
per version, arm and day with intervals and tests (``tally``, ``metrics``), the files written
(``report``) and the command's wiring (``run``)."""
