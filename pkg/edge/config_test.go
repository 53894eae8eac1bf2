package edge

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/herald-push/herald/pkg/broker"
)

// TestConfigErrorNamesTheField: every field Validate refuses is named by
// the *ConfigError, as Go code spells it.
func TestConfigErrorNamesTheField(t *testing.T) {
	tests := []struct {
		cfg   Config
		field string
		text  string
	}{
		{Config{SubjectPrefix: "a.*"}, "SubjectPrefix", "invalid subject prefix"},
		{Config{SSEPath: "/events"}, "SSEPath", "must contain {name}"},
		{Config{SSEPath: "GET /sse/{name}"}, "SSEPath", "must start with /"},
		{Config{SSEPath: "/sse/{name}/{name}"}, "SSEPath", "not a valid route pattern"},
		{Config{SSEPath: "/{name}/x"}, "SSEPath", `conflicts with pattern "/ws/{path...}"`},
		{Config{ExtraSSERoutes: []SSERoute{PodeWebRoute, {Pattern: "/e"}}}, "ExtraSSERoutes[1]", "needs {name}"},
		{Config{ExtraSSERoutes: []SSERoute{{Pattern: "/sse/{name}"}}}, "ExtraSSERoutes[0]", "conflicts with"},
		{Config{ExtraSSERoutes: []SSERoute{{Pattern: "/e", Name: "a\nb"}}}, "ExtraSSERoutes[0]", "control character"},
		{Config{MaxPublishBytes: -1}, "MaxPublishBytes", "must be positive"},
		{Config{Retry: -1}, "Retry", "must not be negative"},
		{Config{PingInterval: -1}, "PingInterval", "must be positive"},
		{Config{WriteTimeout: -1}, "WriteTimeout", "must be positive"},
		{Config{QueueBytes: -1}, "QueueBytes", "must be positive"},
		{Config{QueueMessages: -1}, "QueueMessages", "must be positive"},
		{Config{MaxReplays: -1}, "MaxReplays", "must be positive"},
		{Config{DrainWindow: -1}, "DrainWindow", "must not be negative"},
		{Config{LogInterval: -1}, "LogInterval", "must be positive"},
		{Config{WSInboundRate: math.Inf(1)}, "WSInboundRate", "positive number"},
		{Config{History: &broker.HistoryConfig{MaxAge: -1}}, "History.MaxAge", "MaxAge"},
		{Config{History: &broker.HistoryConfig{MaxBytes: -2}}, "History.MaxBytes", "MaxBytes"},
		{Config{History: &broker.HistoryConfig{Replicas: 9}}, "History.Replicas", "Replicas"},
		{Config{History: &broker.HistoryConfig{Stream: "a b"}}, "History.Stream", "Stream"},
		{Config{PublishTokens: []string{"long-enough", "short"}}, "PublishTokens[1]", "token 2 of 2 is shorter than 8"},
		{Config{PublishTokens: []string{"long\tenough"}}, "PublishTokens[0]", "space or control character"},
		{Config{EdgeID: "a\nb"}, "EdgeID", "space or control character"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			err := tt.cfg.Validate()
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field {
				t.Fatalf("Validate() = %v, want a *ConfigError on %s", err, tt.field)
			}
			if want := "edge: " + tt.field + ": "; !strings.HasPrefix(err.Error(), want) || !strings.Contains(ce.Err.Error(), tt.text) {
				t.Errorf("error %q does not start with %q and say %q", err, want, tt.text)
			}
		})
	}
	valid := Config{ExtraSSERoutes: []SSERoute{PodeWebRoute, {Pattern: "/feeds/{name}"}}, EdgeID: "edge-1",
		PublishTokens: []string{"12345678"}, History: &broker.HistoryConfig{MaxMsgs: -1, MaxBytes: -1, Replicas: 3}}
	if err := valid.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}
