package broker

// SetDirectReplay switches how h replays, so tests can compare batched
// direct gets with an ordered consumer on the same stream.
func SetDirectReplay(h *History, on bool) {
	if on {
		h.mode.Store(uint32(readBatch))
	} else {
		h.mode.Store(uint32(readConsumer))
	}
}

// DirectReplay reports whether h replays with batched direct gets.
func DirectReplay(h *History) bool { return readMode(h.mode.Load()) == readBatch }

// Replay modes, for tests that compare them.
const (
	ReadBatch    = uint32(readBatch)
	ReadDirect   = uint32(readDirect)
	ReadConsumer = uint32(readConsumer)
	ReadMsgGet   = uint32(readMsgGet)
)

// SetReadMode sets how h replays (one of the Read* modes).
func SetReadMode(h *History, mode uint32) { h.mode.Store(mode) }

// ChooseReadMode exposes chooseReadMode.
func ChooseReadMode(version string, direct bool, replicas int) (uint32, error) {
	m, err := chooseReadMode(version, direct, replicas)
	return uint32(m), err
}

// ReadModeOf reports how h replays now.
func ReadModeOf(h *History) uint32 { return h.mode.Load() }

// HistoryOf returns the stream w has open (nil if none).
func HistoryOf(w *HistoryWatch) *History { return w.hist.Load() }
