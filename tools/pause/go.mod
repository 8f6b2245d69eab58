// The pod sandbox ("pause") binary of the test node; no dependencies.
module ragops.dev/tools/pause

go 1.25.0
