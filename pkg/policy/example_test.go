package policy_test

import (
	"errors"
	"fmt"

	"github.com/herald-push/herald/pkg/policy"
)

func ExampleSigner() {
	// Strict mode binds the signature to the client's User-Agent and IP,
	// as Pode.Web does.
	s := policy.Signer{Secret: "super-secret", Strict: true}
	const ua, ip = "curl/8.5.0", "192.168.1.20"

	signed := s.Sign("my-client-id", ua, ip)
	fmt.Println(signed)

	id, err := s.Verify(signed, ua, ip)
	fmt.Println(id, err)

	_, err = s.Verify(signed, ua, "10.0.0.9")
	fmt.Println(errors.Is(err, policy.ErrBadSignature))
	// Output:
	// s:my-client-id.Ntf8sRfIzfGsqQJnw9Bam5Op8IUVqnyhduy7eFRr5Ag=
	// my-client-id <nil>
	// true
}
