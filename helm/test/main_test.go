package charttest

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopSharedAPIServer()
	os.Exit(code)
}
