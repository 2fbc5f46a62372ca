; batch-segment.scm — Script-Fu example: segment every image of a folder with the ConDSeg
; plug-in, headless, and write each mask as an 8-bit PNG (0/255, at the image's size, the
; mask `condseg predict` writes for the same pixels). Works in GIMP 2.10 and GIMP 3.
;
;   gimp-console-2.10 -i -b '(begin (load "/path/to/condseg/plugin/batch-segment.scm")
;       (condseg-batch-segment "/data/images/*.jpg" "/data/masks" "" 0.5 "auto"))' \
;       -b '(gimp-quit 0)'
;   gimp-console-3.0 -i --batch-interpreter=plug-in-script-fu-eval -b '(begin (load ...)
;       (condseg-batch-segment ...))' --quit
;
; Arguments: a file pattern (glob), the output folder (it must exist), the weights file
; ("" for the installed default model), the threshold and, optionally, the device: "auto"
; (the default: an NVIDIA GPU when one is usable, else the CPU), "cpu" or "cuda" (an
; NVIDIA GPU; each image fails, saying why, when there is none). `images/x.jpg` gives
; `masks/x.png`. An image that fails is reported and skipped; the last line says how many
; masks were written. (gimp-console-2.10 exits 0 whatever happens: read that line.)

(define condseg-gimp3? (char=? #\3 (string-ref (car (gimp-version)) 0)))

; "dir/name.ext" -> "name"
(define (condseg-file-stem path)
  (let* ((base (car (reverse (strbreakup path "/"))))
         (parts (strbreakup base ".")))
    (if (> (length parts) 1) (unbreakupstr (butlast parts) ".") base)))

; Runs thunk: (#t . value), or (#f . message) when it raised an error.
(define (condseg-try thunk)
  (call/cc
    (lambda (return)
      (let ((saved *error-hook*))
        (set! *error-hook* (lambda (message . objects)
                             (set! *error-hook* saved)
                             (return (cons #f message))))
        (let ((value (thunk)))
          (set! *error-hook* saved)
          (cons #t value))))))

(define (condseg-load path)
  (car (if condseg-gimp3?
           (gimp-file-load RUN-NONINTERACTIVE path)
           (gimp-file-load RUN-NONINTERACTIVE path path))))

(define (condseg-active-layer image)
  (if condseg-gimp3?
      (vector-ref (car (gimp-image-get-selected-layers image)) 0)
      (car (gimp-image-get-active-layer image))))

; GIMP 2.10's device argument is a number; GIMP 3's is the nick itself.
(define (condseg-device-number device)
  (cond ((equal? device "auto") 0)
        ((equal? device "cpu") 1)
        ((equal? device "cuda") 2)
        (else (error (string-append "condseg: unknown device \"" device
                                    "\" (expected auto, cpu or cuda)")))))

; Where no lesion is found the plug-in leaves the image as it was, without a mask: the
; mask is then the all-black one (what `condseg predict` writes for that image).
(define (condseg-segment-to-mask image layer weights threshold device)
  (if condseg-gimp3?
      (plug-in-condseg RUN-NONINTERACTIVE image (vector layer) weights threshold "layer-mask"
                       device)
      (plug-in-condseg RUN-NONINTERACTIVE image layer weights threshold 0
                       (condseg-device-number device) 0 0))   ; float32, no TTA
  (let ((mask (car (gimp-layer-get-mask layer))))
    (if (or (not mask) (null? mask) (and (number? mask) (< mask 0)))
        (let ((black (car (gimp-layer-create-mask layer ADD-MASK-BLACK))))
          (gimp-layer-add-mask layer black)
          black)
        mask)))

; The mask as an 8-bit gray PNG. GIMP 2.10 exports a single drawable; GIMP 3 exports
; images, so the mask is copied alone into a new one.
(define (condseg-save-mask image mask path)
  (if condseg-gimp3?
      (let* ((copy (car (gimp-image-new (car (gimp-drawable-get-width mask))
                                        (car (gimp-drawable-get-height mask)) GRAY)))
             (layer (car (gimp-layer-new-from-drawable mask copy))))
        (gimp-image-insert-layer copy layer 0 0)
        (gimp-file-save RUN-NONINTERACTIVE copy path)
        (gimp-image-delete copy))
      (begin
        (if (not (= (car (gimp-image-get-precision image)) PRECISION-U8-GAMMA))
            (gimp-image-convert-precision image PRECISION-U8-GAMMA))
        (file-png-save2 RUN-NONINTERACTIVE image mask path path 0 9 0 0 0 0 0 0 0))))

; `options` is empty or holds the device (optional, so that older calls still work).
(define (condseg-batch-segment pattern out-dir weights threshold . options)
  (let ((device (if (null? options) "auto" (car options))))
    (condseg-device-number device)   ; an unknown device stops here, before any image
    (let loop ((paths (if condseg-gimp3?
                          (car (file-glob pattern 1))
                          (cadr (file-glob pattern 1))))
               (written 0)
               (failed 0))
      (if (null? paths)
          (gimp-message (string-append "condseg-batch-segment: " (number->string written)
                                       " mask(s) written to " out-dir ", "
                                       (number->string failed) " image(s) failed"))
          (let* ((path (car paths))
                 (out (string-append out-dir "/" (condseg-file-stem path) ".png"))
                 (loaded (condseg-try (lambda () (condseg-load path))))
                 (image (and (car loaded) (cdr loaded)))
                 (outcome (if image
                              (condseg-try
                                (lambda ()
                                  (condseg-save-mask
                                    image
                                    (condseg-segment-to-mask image (condseg-active-layer image)
                                                             weights threshold device)
                                    out)))
                              loaded))
                 (ok (car outcome)))
            (if image (gimp-image-delete image))
            (gimp-message (string-append "condseg: " path
                                         (if ok (string-append " -> " out)
                                             (string-append ": FAILED: " (cdr outcome)))))
            (loop (cdr paths) (if ok (+ written 1) written) (if ok failed (+ failed 1))))))))
