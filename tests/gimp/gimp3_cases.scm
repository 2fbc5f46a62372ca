; gimp3_cases.scm — the headless GIMP 3 checks of plug-in-condseg, in Script-Fu (v3
; dialect: single return values unwrapped, #t/#f). gimp3_chroot.sh loads this file into
; gimp-console-3.0 with the case list that gimp_plugin_tests.py generates; the two
; functions are those of gimp2_cases.scm, over GIMP 3's API.
;
; Each case reports one line through gimp-message, "CS-RESULT <case> key=value ...", and
; writes what the plug-in produced as PNG; gimp_plugin_tests.py checks both.

(script-fu-use-v3)

(define cs-output-nicks
  (vector "layer-mask" "selection" "probability-layer" "uncertainty-layer"
          "sid-uncertainty-layer"))

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

; An item returned by a procedure as its id; -1 for none.
(define (cs-id-or-none x)
  (cond ((number? x) x) ((or (null? x) (not x)) -1) (else (gimp-item-get-id x))))

; The plug-in's other return values (marked percent, verdict) and, for a new layer, its
; name, mode and opacity (see gimp2_cases.scm).
(define (cs-report-verdict name values written output)
  (gimp-message (string-append "CS-VERDICT " name " " (caddr values)))
  (if (>= output 2)
      (gimp-message (string-append "CS-NAME " name " " (gimp-item-get-name written))))
  (cs-report name "-extra percent=" (number->string (cadr values))
             (if (>= output 2)
                 (string-append
                  " mode-screen=" (if (= (gimp-layer-get-mode written) LAYER-MODE-SCREEN)
                                      "1" "0")
                  " opacity=" (number->string (gimp-layer-get-opacity written)))
                 "")))
(define (cs-bool x) (if x "1" "0"))

; One drawable (layer, layer mask or channel) as PNG, at its image's precision: GIMP 3
; exports whole images, so the drawable is copied alone into a new one (gray for masks
; and channels).
(define (cs-save image drawable path)
  (let* ((base (if (gimp-item-id-is-layer drawable) (gimp-image-get-base-type image) GRAY))
         (copy (gimp-image-new-with-precision (gimp-drawable-get-width drawable)
                                              (gimp-drawable-get-height drawable) base
                                              (gimp-image-get-precision image)))
         (layer (gimp-layer-new-from-drawable drawable copy)))
    (if (= base INDEXED)
        (gimp-image-set-palette copy (gimp-image-get-palette image)))
    (gimp-image-insert-layer copy layer 0 0)
    (gimp-layer-set-offsets layer 0 0)
    ; The pixels themselves: the export composites, and a map layer comes in Screen mode at
    ; 75 % (checked on the original layer, cs-report-verdict).
    (if (gimp-item-id-is-layer drawable)
        (begin (gimp-layer-set-mode layer LAYER-MODE-NORMAL)
               (gimp-layer-set-opacity layer 100)))
    (file-png-export #:run-mode RUN-NONINTERACTIVE #:image copy #:file path
                     #:compression 1)
    (gimp-image-delete copy)))

(define (cs-load path)
  (let ((image (gimp-file-load RUN-NONINTERACTIVE path)))
    (gimp-image-clean-all image)
    image))

(define (cs-active-layer image) (vector-ref (gimp-image-get-selected-layers image) 0))
(define (cs-layer-count image) (vector-length (gimp-image-get-layers image)))
(define (cs-channel-count image) (vector-length (gimp-image-get-channels image)))
(define (cs-item-id item) (if (number? item) item (gimp-item-get-id item)))

(define (cs-has-mask layer)
  (let ((mask (gimp-layer-get-mask layer)))
    (and mask (not (equal? mask -1)) (gimp-item-id-is-valid (cs-item-id mask)))))

; What a failed run must leave as it was.
(define (cs-state image layer)
  (string-append "dirty=" (cs-bool (gimp-image-is-dirty image))
                 " layers=" (cs-int (cs-layer-count image))
                 " channels=" (cs-int (cs-channel-count image))
                 " selection-empty=" (cs-bool (gimp-selection-is-empty image))
                 " mask=" (if (cs-has-mask layer) "1" "-1")))

(define (cs-geometry prefix drawable)
  (let ((offsets (gimp-drawable-get-offsets drawable)))
    (string-append " " prefix "offsets=" (cs-int (car offsets)) "," (cs-int (cadr offsets))
                   " " prefix "size=" (cs-int (gimp-drawable-get-width drawable)) ","
                   (cs-int (gimp-drawable-get-height drawable)))))

; `device` "" leaves the argument out (keyword call): the procedure's default, automatic.
; A device given goes by position, as batch-segment.scm passes it: there GIMP checks the
; nick and refuses an unknown one, while a keyword call's unknown nick only draws a GLib
; warning from Script-Fu and leaves the default.
; The precision likewise: left out when "", else passed by position (after the device).
; Test-time augmentation (`tta` 1) goes last by position, after the device and precision
; (their defaults when ""); 0 leaves it out, as scripts written before it do.
(define (cs-run image drawable weights threshold output device precision tta)
  (cond ((= tta 1)
         (plug-in-condseg RUN-NONINTERACTIVE image (vector drawable) weights threshold
                          (vector-ref cs-output-nicks output)
                          (if (equal? device "") "auto" device)
                          (if (equal? precision "") "fp32" precision) #t))
        ((and (equal? device "") (equal? precision ""))
         (plug-in-condseg #:run-mode RUN-NONINTERACTIVE #:image image
                          #:drawables (vector drawable) #:weights weights
                          #:threshold threshold #:output (vector-ref cs-output-nicks output)))
        ((equal? precision "")
         (plug-in-condseg RUN-NONINTERACTIVE image (vector drawable) weights threshold
                          (vector-ref cs-output-nicks output) device))
        (else
         (plug-in-condseg RUN-NONINTERACTIVE image (vector drawable) weights threshold
                          (vector-ref cs-output-nicks output)
                          (if (equal? device "") "auto" device) precision))))

; A run that must succeed; `prepare` as in gimp2_cases.scm.
(define (cs-case name path weights threshold output device precision tta prepare out decoded)
  (let* ((image (cs-load path))
         (layer (cs-active-layer image)))
    (cond ((equal? prepare "float-linear")
           (gimp-image-convert-precision image PRECISION-FLOAT-LINEAR))
          ((equal? prepare "offset") (gimp-layer-set-offsets layer 7 5))
          ((equal? prepare "existing-mask")
           (gimp-layer-add-mask layer (gimp-layer-create-mask layer ADD-MASK-BLACK)))
          ((equal? prepare "save-decoded") (cs-save image layer decoded)))
    (let* ((layers-before (cs-layer-count image))
           (channels-before (cs-channel-count image))
           (outcome (cs-try (lambda () (cs-run image layer weights threshold output device precision tta))))
           (returned (and (car outcome) (car (cdr outcome)))))
      (cs-report-error name outcome)
      (if (not returned)
          (cs-report name " status=error")
          (let ((written (cond ((= output 0) (gimp-layer-get-mask layer))
                               ((= output 1) (gimp-image-get-selection image))
                               (else (cs-active-layer image)))))
            (cs-save image written out)
            (cs-report-verdict name (cdr outcome) written output)
            (cs-report name " status=success"
                       " returned-written="
                       (if (= (cs-item-id returned) (cs-item-id written)) "1" "0")
                       " layers-added=" (cs-int (- (cs-layer-count image) layers-before))
                       " channels-added=" (cs-int (- (cs-channel-count image) channels-before))
                       (if (>= output 2)
                           (string-append
                            " written-position="
                            (cs-int (gimp-image-get-item-position image written))
                            " source-position="
                            (cs-int (gimp-image-get-item-position image layer)))
                           "")
                       (cs-geometry "" written)
                       (cs-geometry "source-" layer)))))
    (gimp-image-delete image)))

; A run that must fail and leave the image as it was (see gimp2_cases.scm).
(define (cs-error-case name path weights threshold output device precision tta target before
                       after)
  (let* ((image (cs-load path))
         (layer (cs-active-layer image))
         (drawable (if (equal? target "channel")
                       (let ((channel (gimp-channel-new image "test channel"
                                                    (gimp-image-get-width image)
                                                    (gimp-image-get-height image)
                                                    50 '(0 0 0))))
                         (gimp-image-insert-channel image channel 0 0)
                         (gimp-image-clean-all image)
                         channel)
                       layer)))
    (cs-save image layer before)
    (let* ((state-before (cs-state image layer))
           (outcome (cs-try (lambda () (cs-run image drawable weights threshold output device precision tta)))))
      (cs-save image layer after)
      (cs-report-error name outcome)
      (cs-report name " status=" (if (car outcome) "success" "error")
                 " unchanged=" (if (equal? state-before (cs-state image layer)) "1" "0")
                 " " (cs-state image layer)))
    (gimp-image-delete image)))

; A run that must succeed without marking anything (see gimp2_cases.scm).
(define (cs-empty-case name path weights threshold output device precision tta)
  (let* ((image (cs-load path))
         (layer (cs-active-layer image))
         (state-before (cs-state image layer))
         (layers-before (cs-layer-count image))
         (outcome (cs-try (lambda () (cs-run image layer weights threshold output device precision tta)))))
    (cs-report-error name outcome)
    (if (car outcome)
        (let ((values (cdr outcome)))
          (gimp-message (string-append "CS-VERDICT " name " " (caddr values)))
          (if (>= output 2)
              (gimp-message (string-append "CS-NAME " name " "
                                           (gimp-item-get-name (car values)))))
          (cs-report name " status=success returned=" (cs-int (cs-id-or-none (car values)))
                     " percent=" (number->string (cadr values))
                     " layers-added=" (cs-int (- (cs-layer-count image) layers-before))
                     " unchanged=" (if (equal? state-before (cs-state image layer)) "1" "0")
                     " " (cs-state image layer)))
        (cs-report name " status=error"))
    (gimp-image-delete image)))

; A run with the last values GIMP 3 keeps for the procedure (RUN-WITH-LAST-VALS), which
; the driver wrote into the profile as GIMP writes them after an interactive run.
(define (cs-last-values-case name path output out)
  (let* ((image (cs-load path))
         (layer (cs-active-layer image))
         (outcome (cs-try (lambda ()
                            (plug-in-condseg #:run-mode RUN-WITH-LAST-VALS #:image image
                                             #:drawables (vector layer))))))
    (cs-report-error name outcome)
    (if (car outcome)
        (let ((written (cond ((= output 0) (gimp-layer-get-mask layer))
                             ((= output 1) (gimp-image-get-selection image))
                             (else (cs-active-layer image)))))
          (cs-save image written out)
          (cs-report name " status=success returned-written="
                     (if (= (cs-id-or-none (car (cdr outcome))) (cs-item-id written)) "1" "0")
                     " layers-added=0 channels-added=0"
                     (cs-geometry "" written) (cs-geometry "source-" layer)))
        (cs-report name " status=error"))
    (gimp-image-delete image)))
