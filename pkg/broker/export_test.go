package broker

// SetDirectReplay switches how h replays, so tests can compare batched
// direct gets with an ordered consumer on the same stream.
func SetDirectReplay(h *History, on bool) { h.direct = on }

// DirectReplay reports whether h replays with batched direct gets.
func DirectReplay(h *History) bool { return h.direct }
