package charttest

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopSharedAPIServer()
	for _, d := range tmpRoots {
		os.RemoveAll(d)
	}
	os.Exit(code)
}
