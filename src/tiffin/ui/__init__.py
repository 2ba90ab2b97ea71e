"""The web interface: experiments, models, batch runs and monitoring, server-rendered, at /ui/.

`tiffin ui` serves it from a checkout (with DVC's experiments); the Bento mounts the same app at /ui/, where it
shows what the service can see: the model store, the champion file, the database and the monitoring reports.
It only reads. Pages are HTML from the server with inline SVG charts: no build step, nothing from the internet.
"""
