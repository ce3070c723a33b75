package ollamatest

// GroupMembers exposes groupMembers to the tests.
var GroupMembers = groupMembers
