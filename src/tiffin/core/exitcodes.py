"""The exit codes Tiffin's jobs end with, as numbers: one place for the layers that decide them and for the
command line that documents them (`tiffin.cli.exits`). Kept here, at the bottom, so that reading them costs
no import of the jobs."""

OK = 0
FAILURE = 1
USAGE = 2  # click's: a bad option or argument, said before anything runs
PARTIAL = 3  # a batch run scored what it could; the rest is in prediction_rejects
ALARM = 4  # monitoring crossed a threshold
BUSY = 75  # sysexits' EX_TEMPFAIL: another run holds the source; try again later
OBJECTIVES_MISSED = 1  # a load-test gate missed an objective
SERVER_FAILED = 2  # a load-test gate's server or container did not start or answer
