package lifecycle

// transitions is the state machine: for each status, the statuses it may
// move to. Anything not listed is refused with ErrInvalidTransition.
//
//	created                -> started, submitted, canceled, expired
//	started                -> submitted, canceled, abandoned
//	submitted              -> review, approved, declined, resubmission_requested, canceled
//	review                 -> approved, declined, resubmission_requested, canceled
//	resubmission_requested -> started, submitted, canceled, expired
//	approved, declined, expired, abandoned, canceled: final
//
// The one way out of a terminal status is resume (resumeStatus), which takes
// an expired or abandoned session back to the active status it had.
var transitions = map[Status][]Status{
	StatusCreated:               {StatusStarted, StatusSubmitted, StatusCanceled, StatusExpired},
	StatusStarted:               {StatusSubmitted, StatusCanceled, StatusAbandoned},
	StatusSubmitted:             {StatusReview, StatusApproved, StatusDeclined, StatusResubmissionRequested, StatusCanceled},
	StatusReview:                {StatusApproved, StatusDeclined, StatusResubmissionRequested, StatusCanceled},
	StatusResubmissionRequested: {StatusStarted, StatusSubmitted, StatusCanceled, StatusExpired},
}

// CanTransition reports whether the machine allows from -> to.
func CanTransition(from, to Status) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// expiryStatus is the status a pending session takes when its time runs out:
// a session the user opened is abandoned, one never opened expires.
func expiryStatus(s Status) Status {
	if s == StatusStarted {
		return StatusAbandoned
	}
	return StatusExpired
}

// deleteRefusal says why a session in s cannot be deleted, or nil.
func deleteRefusal(s Status) error {
	switch s {
	case StatusCreated, StatusStarted, StatusAbandoned, StatusExpired, StatusApproved,
		StatusResubmissionRequested, StatusDeclined, StatusReview, StatusCanceled:
		return nil
	case StatusSubmitted:
		return ErrSessionInProgress
	}
	return ErrNotCompleted
}

// resumeStatus is the status a resumed session returns to: the pending
// status it expired from. ok is false when s cannot be resumed.
func resumeStatus(s, expiredFrom Status) (to Status, ok bool) {
	switch s {
	case StatusAbandoned:
		return StatusStarted, true
	case StatusExpired:
		if expiredFrom == StatusResubmissionRequested {
			return StatusResubmissionRequested, true
		}
		return StatusCreated, true
	}
	return "", false
}
