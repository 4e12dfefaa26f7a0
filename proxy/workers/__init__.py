"""Worker processes ([server] workers = N): one control process and N data-plane processes.

channel.py  sans-IO framing of the control <-> worker messages (length-prefixed pickles) and the messages
shares.py   pure: how per-proxy limits are split into each worker's config
merge.py    pure: how the workers' SHOW tables, /status documents and metric families add up to one
link.py     the asyncio side of one channel: requests with replies, one-way notices
control.py  the control process: spawns and restarts workers, topology, failover, admin, HTTP
worker.py   a worker process: listeners (SO_REUSEPORT), client sessions and pools; topology from control
"""
