package load

import (
	"bytes"
	"strconv"
)

// AppendPayload appends the JSON payload of one message:
// {"step":S,"seq":N,"ts":T,"pad":"xx..."}, padded with x up to size bytes
// when size is larger than the bare payload. ts is the send time in unix
// nanoseconds.
func AppendPayload(dst []byte, step, seq, ts int64, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"step":`...)
	dst = strconv.AppendInt(dst, step, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	if pad := size - (len(dst) - start) - len(`,"pad":""}`); pad > 0 {
		dst = append(dst, `,"pad":"`...)
		for range pad {
			dst = append(dst, 'x')
		}
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// Marker is what a receiver reads back from a payload.
type Marker struct {
	Step, Seq, TS int64
}

// ParseMarker finds step, seq and ts in data. It accepts the payload as
// AppendPayload writes it and also embedded in another server's envelope,
// even as an escaped JSON string ({\"step\":1,...}): each key is found
// after a quote and its number after any of `\": ` characters.
func ParseMarker(data []byte) (Marker, bool) {
	var m Marker
	var ok1, ok2, ok3 bool
	if m.Step, ok1 = findNumber(data, `"step`); !ok1 {
		return m, false
	}
	if m.Seq, ok2 = findNumber(data, `"seq`); !ok2 {
		return m, false
	}
	m.TS, ok3 = findNumber(data, `"ts`)
	return m, ok3
}

func findNumber(data []byte, key string) (int64, bool) {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, false
	}
	i += len(key)
	for i < len(data) && (data[i] == '\\' || data[i] == '"' || data[i] == ':' || data[i] == ' ') {
		i++
	}
	var n int64
	j := i
	for ; j < len(data) && data[j] >= '0' && data[j] <= '9' && j-i < 19; j++ {
		n = n*10 + int64(data[j]-'0')
	}
	return n, j > i
}
