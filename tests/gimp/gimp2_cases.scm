; gimp2_cases.scm — the headless GIMP 2.10 checks of plug-in-condseg, in Script-Fu.
; run_gimp_tests.sh loads this file into gimp-console-2.10 with a case list that
; gimp_plugin_tests.py generates; gimp3_cases.scm defines the same two functions for GIMP 3.
;
; Each case reports one line through gimp-message, "CS-RESULT <case> key=value ...", and
; writes what the plug-in produced as PNG; gimp_plugin_tests.py checks both. (gimp-console
; exits 0 even when a batch command fails: only the outputs tell.)

(define (cs-report . parts)
  (gimp-message (apply string-append "CS-RESULT " parts)))

; Runs thunk; returns (#t . value), or (#f . message) when it raised an error (the message
; of a failed PDB call holds the reason the plug-in returned).
(define (cs-try thunk)
  (call/cc
    (lambda (return)
      (let ((saved *error-hook*))
        (set! *error-hook*
              (lambda (message . objects)
                (set! *error-hook* saved)
                (return (cons #f message))))
        (let ((value (thunk)))
          (set! *error-hook* saved)
          (cons #t value))))))

(define (cs-report-error name outcome)
  (if (not (car outcome))
      (gimp-message (string-append "CS-ERROR " name " " (cdr outcome)))))

(define (cs-int x) (number->string x))

; The plug-in's other return values (marked percent, verdict) and, for a new layer, its
; name, mode and opacity: "CS-VERDICT <case> <text>", "CS-NAME <case> <name>",
; "CS-RESULT <case>-extra percent=... mode-screen=... opacity=...".
(define (cs-report-verdict name values written output)
  (gimp-message (string-append "CS-VERDICT " name " " (caddr values)))
  (if (>= output 2)
      (gimp-message (string-append "CS-NAME " name " " (car (gimp-item-get-name written)))))
  (cs-report name "-extra percent=" (number->string (cadr values))
             (if (>= output 2)
                 (string-append
                  " mode-screen=" (if (= (car (gimp-layer-get-mode written)) LAYER-MODE-SCREEN)
                                      "1" "0")
                  " opacity=" (number->string (car (gimp-layer-get-opacity written))))
                 "")))

; The device argument: "" (the default, automatic: 2.10's Script-Fu needs every argument)
; or a nick as in GIMP 3; any other nick becomes 99, a number no device has, for the
; unknown-device case.
(define (cs-device device)
  (cond ((equal? device "") 0)
        ((equal? device "auto") 0)
        ((equal? device "cpu") 1)
        ((equal? device "cuda") 2)
        (else 99)))

; The precision argument likewise: "" (float32), a nick, or 99 for the unknown one.
(define (cs-precision precision)
  (cond ((equal? precision "") 0)
        ((equal? precision "fp32") 0)
        ((equal? precision "bf16") 1)
        (else 99)))

; One drawable of `image` (layer, layer mask or channel) as PNG, at the image's precision.
(define (cs-save image drawable path)
  (file-png-save2 RUN-NONINTERACTIVE image drawable path path 0 1 0 0 0 0 0 0 0))

(define (cs-load path)
  (let ((image (car (gimp-file-load RUN-NONINTERACTIVE path path))))
    (gimp-image-clean-all image)
    image))

(define (cs-layer-count image) (car (gimp-image-get-layers image)))
(define (cs-channel-count image) (car (gimp-image-get-channels image)))

; What a failed run must leave as it was.
(define (cs-state image layer)
  (string-append "dirty=" (cs-int (car (gimp-image-is-dirty image)))
                 " layers=" (cs-int (cs-layer-count image))
                 " channels=" (cs-int (cs-channel-count image))
                 " selection-empty=" (cs-int (car (gimp-selection-is-empty image)))
                 " mask=" (cs-int (car (gimp-layer-get-mask layer)))))

(define (cs-geometry prefix drawable)
  (let ((offsets (gimp-drawable-offsets drawable)))
    (string-append " " prefix "offsets=" (cs-int (car offsets)) "," (cs-int (cadr offsets))
                   " " prefix "size=" (cs-int (car (gimp-drawable-width drawable))) ","
                   (cs-int (car (gimp-drawable-height drawable))))))

; A run that must succeed; writes the result to `out`. `prepare`:
;   "plain"         the image as loaded
;   "float-linear"  converted to 32-bit float, linear light, first
;   "offset"        the layer moved to (7, 5) first
;   "existing-mask" the layer given a black mask first (the plug-in must overwrite it)
;   "save-decoded"  the loaded pixels also written to `decoded` (what GIMP decoded)
(define (cs-case name path weights threshold output device precision tta prepare out decoded)
  (let* ((image (cs-load path))
         (layer (car (gimp-image-get-active-layer image))))
    (cond ((equal? prepare "float-linear")
           (gimp-image-convert-precision image PRECISION-FLOAT-LINEAR))
          ((equal? prepare "offset") (gimp-layer-set-offsets layer 7 5))
          ((equal? prepare "existing-mask")
           (gimp-layer-add-mask layer (car (gimp-layer-create-mask layer ADD-MASK-BLACK))))
          ((equal? prepare "save-decoded") (cs-save image layer decoded)))
    (let* ((layers-before (cs-layer-count image))
           (channels-before (cs-channel-count image))
           (outcome (cs-try (lambda ()
                              (plug-in-condseg RUN-NONINTERACTIVE image layer weights
                                               threshold output (cs-device device)
                                               (cs-precision precision) tta))))
           (returned (and (car outcome) (car (cdr outcome)))))
      (cs-report-error name outcome)
      (if (not returned)
          (cs-report name " status=error")
          (let ((written (cond ((= output 0) (car (gimp-layer-get-mask layer)))
                               ((= output 1) (car (gimp-image-get-selection image)))
                               (else (car (gimp-image-get-active-layer image))))))
            (cs-save image written out)
            (cs-report-verdict name (cdr outcome) written output)
            (cs-report name " status=success"
                       " returned-written=" (if (= returned written) "1" "0")
                       " layers-added=" (cs-int (- (cs-layer-count image) layers-before))
                       " channels-added=" (cs-int (- (cs-channel-count image) channels-before))
                       (if (>= output 2)
                           (string-append
                            " written-position="
                            (cs-int (car (gimp-image-get-item-position image written)))
                            " source-position="
                            (cs-int (car (gimp-image-get-item-position image layer))))
                           "")
                       (cs-geometry "" written)
                       (cs-geometry "source-" layer)))))
    (gimp-image-delete image)))

; A run that must fail and leave the image as it was. `target` is "layer" (the active
; layer) or "channel" (a new channel, which has no layer mask to take the result). The
; layer's pixels are written before the call to `before` and after it to `after`.
(define (cs-error-case name path weights threshold output device precision tta target before
                       after)
  (let* ((image (cs-load path))
         (layer (car (gimp-image-get-active-layer image)))
         (drawable (if (equal? target "channel")
                       (let ((channel (car (gimp-channel-new
                                            image (car (gimp-image-width image))
                                            (car (gimp-image-height image)) "test channel"
                                            50 '(0 0 0)))))
                         (gimp-image-insert-channel image channel 0 0)
                         (gimp-image-clean-all image)
                         channel)
                       layer)))
    (cs-save image layer before)
    (let* ((state-before (cs-state image layer))
           (outcome (cs-try (lambda ()
                              (plug-in-condseg RUN-NONINTERACTIVE image drawable weights
                                               threshold output (cs-device device)
                                               (cs-precision precision) tta)))))
      (cs-save image layer after)
      (cs-report-error name outcome)
      (cs-report name " status=" (if (car outcome) "success" "error")
                 " unchanged=" (if (equal? state-before (cs-state image layer)) "1" "0")
                 " " (cs-state image layer)))
    (gimp-image-delete image)))

; A run that must succeed without marking anything: `expect-unchanged` for the mask
; outputs (the image must be left exactly as it was), else a map layer must be added.
(define (cs-empty-case name path weights threshold output device precision tta)
  (let* ((image (cs-load path))
         (layer (car (gimp-image-get-active-layer image)))
         (state-before (cs-state image layer))
         (layers-before (cs-layer-count image))
         (outcome (cs-try (lambda ()
                            (plug-in-condseg RUN-NONINTERACTIVE image layer weights
                                             threshold output (cs-device device)
                                               (cs-precision precision) tta)))))
    (cs-report-error name outcome)
    (if (car outcome)
        (let ((values (cdr outcome)))
          (gimp-message (string-append "CS-VERDICT " name " " (caddr values)))
          (if (>= output 2)
              (gimp-message (string-append "CS-NAME " name " "
                                           (car (gimp-item-get-name (car values))))))
          (cs-report name " status=success returned=" (cs-int (car values))
                     " percent=" (number->string (cadr values))
                     " layers-added=" (cs-int (- (cs-layer-count image) layers-before))
                     " unchanged=" (if (equal? state-before (cs-state image layer)) "1" "0")
                     " " (cs-state image layer)))
        (cs-report name " status=error"))
    (gimp-image-delete image)))

; A run with the last values (RUN-WITH-LAST-VALS, the arguments ignored), which the
; driver stored as the plug-in's parasite in an earlier GIMP session: the result is
; written to `out` as in cs-case, `output` being the stored output.
(define (cs-last-values-case name path output out)
  (let* ((image (cs-load path))
         (layer (car (gimp-image-get-active-layer image)))
         (outcome (cs-try (lambda ()
                            (plug-in-condseg RUN-WITH-LAST-VALS image layer "" 0.0 0 0 0 0)))))
    (cs-report-error name outcome)
    (if (car outcome)
        (let ((written (cond ((= output 0) (car (gimp-layer-get-mask layer)))
                             ((= output 1) (car (gimp-image-get-selection image)))
                             (else (car (gimp-image-get-active-layer image))))))
          (cs-save image written out)
          (cs-report name " status=success returned-written="
                     (if (= (car (cdr outcome)) written) "1" "0")
                     " layers-added=0 channels-added=0"
                     (cs-geometry "" written) (cs-geometry "source-" layer)))
        (cs-report name " status=error"))
    (gimp-image-delete image)))
