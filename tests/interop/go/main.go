// Command oidc-verify verifies the tokens written by remote_sign_verify.mjs with go-oidc, the
// library (on go-jose) behind most Go relying parties and the Kubernetes apiserver's JWT
// authenticator.
//
// Usage: oidc-verify TOKENS.json
//
// TOKENS.json holds issuer, audience, jwks_uri and the tokens, each with the outcome it must
// have ("valid" or "invalid"; `expect_by` overrides it for one library). The issuer is
// discovered with oidc.NewProvider (which requires the discovery document's issuer to equal
// it), and one verifier with ClientID = audience and every asymmetric algorithm go-oidc
// supports checks all tokens, fetching the JWK Set from the discovered jwks_uri. Prints one
// JSON object on stdout; exits 0 when every outcome is the expected one, otherwise 1 with a
// one-line reason on stderr (2 for usage). Built by setup.sh (its OIDC_VERIFY= line).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

const (
	library = "go-oidc"
	script  = "oidc-verify"
)

// Every asymmetric algorithm go-oidc v3 defines; HS* and none are deliberately absent.
var signingAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512,
	oidc.PS256, oidc.PS384, oidc.PS512,
	oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.EdDSA,
}

type tokensFile struct {
	Issuer   string  `json:"issuer"`
	Audience string  `json:"audience"`
	JwksURI  string  `json:"jwks_uri"`
	Tokens   []token `json:"tokens"`
}

type token struct {
	Case     string            `json:"case"`
	Alg      string            `json:"alg"`
	Kid      string            `json:"kid"`
	Token    string            `json:"token"`
	Expect   string            `json:"expect"`
	ExpectBy map[string]string `json:"expect_by"`
}

type result struct {
	Case       string  `json:"case"`
	Alg        string  `json:"alg"`
	Kid        string  `json:"kid"`
	Expect     string  `json:"expect"`
	Outcome    string  `json:"outcome"`
	AsExpected bool    `json:"as_expected"`
	Code       *string `json:"code"`
	Error      *string `json:"error"`
}

type report struct {
	Library        string   `json:"library"`
	LibraryVersion string   `json:"library_version"`
	GoJoseVersion  string   `json:"go_jose_version"`
	GoVersion      string   `json:"go_version"`
	Issuer         string   `json:"issuer"`
	JwksURI        string   `json:"jwks_uri"`
	Results        []result `json:"results"`
	Unexpected     []string `json:"unexpected"`
}

func main() {
	if len(os.Args) != 2 || strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprintf(os.Stderr, "%s: usage: oidc-verify TOKENS.json\n", script)
		os.Exit(2)
	}
	spec, err := readTokens(os.Args[1])
	if err != nil {
		fail(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, spec.Issuer)
	if err != nil {
		fail(fmt.Errorf("discovery for %s: %w", spec.Issuer, err))
	}
	var discovered struct {
		JwksURI string `json:"jwks_uri"`
	}
	if err := provider.Claims(&discovered); err != nil {
		fail(fmt.Errorf("discovery document: %w", err))
	}
	if discovered.JwksURI != spec.JwksURI {
		fail(fmt.Errorf("discovery jwks_uri %q differs from %q in %s", discovered.JwksURI, spec.JwksURI, os.Args[1]))
	}

	verifier := provider.Verifier(&oidc.Config{ClientID: spec.Audience, SupportedSigningAlgs: signingAlgs})
	rep := report{
		Library:        library,
		LibraryVersion: moduleVersion("github.com/coreos/go-oidc/v3"),
		GoJoseVersion:  moduleVersion("github.com/go-jose/go-jose/v4"),
		GoVersion:      goVersion(),
		Issuer:         spec.Issuer,
		JwksURI:        discovered.JwksURI,
		Results:        []result{},
		Unexpected:     []string{},
	}
	for _, t := range spec.Tokens {
		_, verr := verifier.Verify(ctx, t.Token)
		r := judge(t, verr)
		rep.Results = append(rep.Results, r)
		if !r.AsExpected {
			msg := fmt.Sprintf("%s %s %s: expected %s, got %s", r.Case, r.Alg, r.Kid, r.Expect, r.Outcome)
			if r.Error != nil {
				msg += " (" + *r.Error + ")"
			}
			rep.Unexpected = append(rep.Unexpected, msg)
		}
	}

	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Println(string(out))
	if len(rep.Unexpected) > 0 {
		fmt.Fprintf(os.Stderr, "%s: %d unexpected: %s\n", script, len(rep.Unexpected), strings.Join(rep.Unexpected, "; "))
		os.Exit(1)
	}
}

func readTokens(path string) (*tokensFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var spec tokensFile
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", path, err)
	}
	if spec.Issuer == "" || spec.Audience == "" || spec.JwksURI == "" {
		return nil, fmt.Errorf("%s lacks issuer, audience or jwks_uri", path)
	}
	return &spec, nil
}

func judge(t token, verr error) result {
	expect := t.Expect
	if e, ok := t.ExpectBy[library]; ok {
		expect = e
	}
	r := result{Case: t.Case, Alg: t.Alg, Kid: t.Kid, Expect: expect, Outcome: "valid"}
	if verr != nil {
		r.Outcome = "invalid"
		msg := strings.Join(strings.Fields(verr.Error()), " ")
		r.Error = &msg
		// go-oidc's typed errors (e.g. *oidc.TokenExpiredError) are worth a code; plain ones not.
		if code := fmt.Sprintf("%T", verr); !strings.HasPrefix(code, "*errors.") && !strings.HasPrefix(code, "*fmt.") {
			r.Code = &code
		}
	}
	r.AsExpected = r.Outcome == expect
	return r
}

func moduleVersion(path string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == path {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func goVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		return info.GoVersion
	}
	return "unknown"
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "%s: %s\n", script, strings.Join(strings.Fields(err.Error()), " "))
	os.Exit(1)
}
