package inference

import "strings"

// SameModel compares model names the way Ollama resolves them: a name without a tag means
// ":latest", and case does not matter.
func SameModel(a, b string) bool { return NormalizeModel(a) == NormalizeModel(b) }

// NormalizeModel adds the implicit ":latest" tag and lower-cases the name.
func NormalizeModel(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	if i := strings.LastIndex(name, "/"); !strings.Contains(name[i+1:], ":") {
		name += ":latest"
	}
	return name
}
