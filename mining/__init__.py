"""Mining: video files in, tracked object crops out.

It owns decoding (PyAV, in worker processes with wall-clock limits), moving-object
discovery (flow with camera motion compensated, motion-box proposals, selective search),
tracking (OpenCV contrib trackers with a forward-backward check), the synthetic video
generator with ground truth, and the executors that drive it: the one-shot run, the
watching daemon, a local process pool and Ray. It writes only through ``storage``.
"""
