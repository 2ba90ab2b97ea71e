"""Jobs: the hourly batch runner (local and Spark engines) and the load-test release gate."""
